import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { ServiceStartError } from './errors';
import { freePort } from './ports';
import { startProcess, type ProcessHandle } from './process';

export interface StartDynaliteOptions {
  /** LevelDB directory: data survives stop/kill + restart. Default: in memory (restart starts empty). */
  path?: string;
  /** `in-process` (default, fastest) or `child`, a separate process that tests can SIGKILL. */
  mode?: 'in-process' | 'child';
  /** Default a random free port. */
  port?: number;
}

export interface DynaliteHandle {
  /** `http://127.0.0.1:<port>`, for DYNAMODB_ENDPOINT / createDynamoClient. */
  readonly endpoint: string;
  readonly port: number;
  readonly mode: 'in-process' | 'child';
  /** Whether it is serving (false after stop()/kill() until restart()). */
  readonly running: boolean;
  /** Stops serving (child: SIGTERM). Idempotent. */
  stop(): Promise<void>;
  /** Starts again on the same port and path (stopping it first if it runs). */
  restart(): Promise<void>;
  /** A crash: child mode sends `signal` (default SIGKILL); in-process drops every open connection and stops. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

type DynaliteFactory = (opts: Record<string, unknown>) => Server;
const requireCjs = createRequire(import.meta.url);

const TIMINGS = { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 };

/** Starts dynalite on 127.0.0.1 with tables ACTIVE at once. */
export async function startDynalite(opts: StartDynaliteOptions = {}): Promise<DynaliteHandle> {
  const mode = opts.mode ?? 'in-process';
  const runner = mode === 'child' ? childRunner(opts.path) : inProcessRunner(opts.path);
  let port = opts.port ?? (mode === 'child' ? await freePort() : 0);
  for (let attempt = 1; ; attempt++) {
    try {
      port = await runner.start(port);
      break;
    } catch (err) {
      if (!(err instanceof PortInUseError) || opts.port !== undefined || attempt >= 5) throw err;
      port = await freePort();
    }
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    mode,
    get running() {
      return runner.running();
    },
    stop: () => runner.stop(),
    kill: (signal) => runner.kill(signal ?? 'SIGKILL'),
    async restart() {
      await runner.stop();
      try {
        await runner.start(port);
      } catch (err) {
        if (err instanceof PortInUseError) {
          throw new ServiceStartError(`cannot restart dynalite: port ${port} was taken by another process meanwhile`, { cause: err });
        }
        throw err;
      }
    },
  };
}

class PortInUseError extends ServiceStartError {}

interface Runner {
  /** Starts serving on `port` (0 = any) and returns the port. */
  start(port: number): Promise<number>;
  stop(): Promise<void>;
  kill(signal: NodeJS.Signals): Promise<void>;
  running(): boolean;
}

function inProcessRunner(path: string | undefined): Runner {
  const dynalite = requireCjs('dynalite') as DynaliteFactory;
  let server: Server | undefined;
  const close = async (): Promise<void> => {
    const s = server;
    if (!s) return;
    server = undefined;
    // Also closes the LevelDB store, releasing its lock so a restart can open the same path.
    await new Promise<void>((resolve, reject) => s.close((err) => (err ? reject(err) : resolve())));
  };
  return {
    async start(port) {
      const s = dynalite({ ...TIMINGS, ...(path ? { path } : {}) });
      await new Promise<void>((resolve, reject) => {
        s.once('error', (err: NodeJS.ErrnoException) =>
          reject(err.code === 'EADDRINUSE' ? new PortInUseError(`dynalite: port ${port} is in use`) : err),
        );
        s.listen(port, '127.0.0.1', () => resolve());
      });
      server = s;
      return (s.address() as AddressInfo).port;
    },
    stop: close,
    async kill() {
      const s = server;
      if (!s) return;
      const closing = close();
      s.closeAllConnections();
      await closing;
    },
    running: () => server !== undefined,
  };
}

function childRunner(path: string | undefined): Runner {
  const cli = requireCjs.resolve('dynalite/cli.js');
  let proc: ProcessHandle | undefined;
  return {
    async start(port) {
      const args = [cli, '--port', String(port), '--host', '127.0.0.1'];
      for (const [k, v] of Object.entries(TIMINGS)) args.push(`--${k}`, String(v));
      if (path) args.push('--path', path);
      const p = await startProcess(process.execPath, args, { name: `dynalite :${port}` });
      try {
        await p.waitForLine(/Dynalite listening at/, { timeoutMs: 15_000 });
      } catch (err) {
        await p.kill('SIGKILL');
        if (/EADDRINUSE/.test(p.output())) throw new PortInUseError(`dynalite: port ${port} is in use`, { cause: err });
        throw err;
      }
      proc = p;
      return port;
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (p) await p.kill('SIGTERM');
    },
    async kill(signal) {
      const p = proc;
      proc = undefined;
      if (p) await p.kill(signal);
    },
    running: () => proc !== undefined && proc.exit === undefined,
  };
}
