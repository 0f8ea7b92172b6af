import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AppName } from '@tally/config';
import { freePort } from './ports';
import { startProcess, type ProcessHandle } from './process';
import { waitFor } from './wait';

/** The repository root (libs/testing/src/../../..). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * What an app runs from: its bundle, `dist/<app>/main.mjs` (tools/build-apps, built by `run-built.mjs` when missing
 * or older than a file it was built from), whose start compiles no TypeScript; or its sources, through tsx.
 */
export type AppSource = 'bundle' | 'sources';

/** Node's arguments that run an app, with the repository root (or another checkout's) as the working directory. */
export function appArgs(app: AppName, from: AppSource = 'sources'): string[] {
  return from === 'bundle' ? ['tools/build-apps/run-built.mjs', app] : ['--import', 'tsx', `apps/${app}/src/main.ts`];
}

/** GET `url`; true on a 2xx answer within `timeoutMs`. */
export async function isHealthy(url: string, timeoutMs = 1_000): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

export interface AppHandle {
  readonly app: AppName;
  readonly port: number;
  readonly url: string;
  /** The current process (replaced by restart()). */
  readonly process: ProcessHandle;
  /** SIGKILL (default) or another signal; waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the app again with the same port and environment (plus `env` overrides), waits for /healthz. */
  restart(env?: Record<string, string | undefined>): Promise<void>;
  /** SIGTERM and wait (graceful stop). */
  stop(): Promise<void>;
  metrics(): Promise<string>;
}

export interface StartAppOptions {
  env: Record<string, string | undefined>;
  /** Echo the app's output to stderr (debugging). */
  echo?: boolean;
  /** Wait for /healthz (default true). */
  waitHealthy?: boolean;
  timeoutMs?: number;
  /** Name shown in messages (default: the app), e.g. `bucket-aggregator#2`. */
  name?: string;
  /** Called with every output line of the app (of each process, across restarts). */
  onLine?: (text: string, stream: 'stdout' | 'stderr') => void;
  /** The checkout whose app runs (default this one): another commit's worktree, for a before/after bench. */
  root?: string;
  /** Default: this checkout's bundle; another checkout's (`root`) sources. */
  from?: AppSource;
}

/** Starts one of the four apps as a real process, from its bundle or its sources (`opts.from`), on a free port. */
export async function startApp(app: AppName, opts: StartAppOptions): Promise<AppHandle> {
  const port = await freePort();
  const root = opts.root ?? REPO_ROOT;
  const from = opts.from ?? (opts.root ? 'sources' : 'bundle');
  // The bundle's own default (next to main.mjs, as in the image) is not where the repository builds the dashboard.
  let env = app === 'query-api' && from === 'bundle' ? { DASHBOARD_DIR: join(root, 'apps/dashboard/dist'), ...opts.env } : { ...opts.env };
  const spawnIt = async () =>
    startProcess(process.execPath, appArgs(app, from), {
      cwd: root,
      name: opts.name ?? app,
      echo: opts.echo,
      ...(opts.onLine ? { onLine: opts.onLine } : {}),
      // The harness reads /metrics without a token: one in the caller's environment is not passed on (a test sets its own).
      env: { LOG_LEVEL: 'warn', METRICS_TOKEN: undefined, ...env, HTTP_PORT: String(port), HTTP_HOST: '127.0.0.1' },
    });
  const healthy = async (proc: ProcessHandle) => {
    const died = proc.exited.then((exit) => {
      throw new Error(`${opts.name ?? app} exited before answering /healthz (${JSON.stringify(exit)}):\n${proc.output()}`);
    });
    died.catch(() => undefined);
    const up = waitFor(() => isHealthy(`http://127.0.0.1:${port}/healthz`, 5_000), {
      timeoutMs: opts.timeoutMs ?? 30_000,
      intervalMs: 100,
      message: `${opts.name ?? app} to answer /healthz`,
    });
    await Promise.race([up, died]);
  };
  let proc = await spawnIt();
  if (opts.waitHealthy !== false) await healthy(proc);
  return {
    app,
    port,
    url: `http://127.0.0.1:${port}`,
    get process() {
      return proc;
    },
    async kill(signal = 'SIGKILL') {
      await proc.kill(signal);
    },
    async stop() {
      await proc.kill('SIGTERM', { timeoutMs: 20_000 });
    },
    async restart(extra) {
      if (!proc.exit) await proc.kill('SIGKILL');
      env = { ...env, ...extra };
      proc = await spawnIt();
      if (opts.waitHealthy !== false) await healthy(proc);
    },
    async metrics() {
      return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    },
  };
}
