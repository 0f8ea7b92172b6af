import { setTimeout as delay } from 'node:timers/promises';
import { killGroup, startProcess, type ProcessExit, type StartProcessOptions } from '@tally/testing';

/** What to run: `command` with `args` in `cwd`, its output lines shown under `name`. */
export type ProcessSpec = Required<Pick<StartProcessOptions, 'name' | 'cwd' | 'env'>> & { command: string; args: string[] };

/** Restart delays: `initialMs`, doubling on every consecutive crash up to `maxMs`; a run of `resetAfterMs` starts over. */
type BackoffPolicy = { initialMs: number; maxMs: number; resetAfterMs: number };

/** Delay before restart number `attempt` (1-based). */
export const backoffDelay = (attempt: number, p: BackoffPolicy): number => Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, attempt - 1));

export interface CrashReport extends ProcessExit {
  name: string;
  pid: number | undefined;
  /** Set when the process could not be started at all (e.g. ENOENT). */
  error?: Error;
  uptimeMs: number;
  lastLines: string[];
  /** Consecutive crashes so far, this one included. */
  attempt: number;
  restartInMs: number;
}

export interface SupervisorOptions {
  onLine(name: string, line: string): void;
  onSpawn?(name: string, pid: number): void;
  onCrash?(report: CrashReport): void;
  backoff?: BackoffPolicy;
  /** Lines kept for the crash report (default 15). */
  tailLines?: number;
  /** Grace period after SIGTERM before SIGKILL (default 10 s). */
  stopTimeoutMs?: number;
}

type StopOutcome = 'not-running' | 'exited' | 'killed';
type Exit = Pick<CrashReport, 'pid' | 'code' | 'signal' | 'error' | 'lastLines'>;

/**
 * Runs `once` (one run of the child, until it exits or `stopped` settles) over and over: each exit is reported as a
 * crash, then the backoff passes; `stop()` ends it with what `once` returns on stop ('not-running' between runs).
 */
function restarting(name: string, o: Partial<SupervisorOptions>, once: (stopped: Promise<'stop'>) => Promise<Exit | StopOutcome>) {
  const stopping = new AbortController();
  const stopped = new Promise<'stop'>((resolve) => stopping.signal.addEventListener('abort', () => resolve('stop')));
  const backoff = o.backoff ?? { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };
  const running = (async (): Promise<StopOutcome> => {
    for (let attempt = 1; ; attempt++) {
      const startedAt = Date.now();
      const exit = await once(stopped);
      if (typeof exit === 'string') return exit;
      if (stopping.signal.aborted) return 'not-running';
      const uptimeMs = Date.now() - startedAt;
      if (uptimeMs >= backoff.resetAfterMs) attempt = 1;
      const restartInMs = backoffDelay(attempt, backoff);
      o.onCrash?.({ name, ...exit, uptimeMs, attempt, restartInMs });
      if (!(await delay(restartInMs, true, { signal: stopping.signal }).catch(() => false))) return 'not-running';
    }
  })();
  return { stop: (): Promise<StopOutcome> => (stopping.abort(), running) };
}

/**
 * Keeps one child process running (in its own process group, started by the shared launcher in
 * `@tally/testing`): forwards its output line by line, and when it exits on its own reports the crash with its
 * last lines and starts it again after an exponential backoff. Its children are not tied to this process's
 * life: a stack that dies leaves them to the next start (run-file.ts), which stops them gently. `stop()` stops the
 * child (SIGTERM, then SIGKILL after the deadline, then its whole group) and cancels any pending restart.
 */
export function supervise({ name, command, args, cwd, env }: ProcessSpec, o: SupervisorOptions) {
  return restarting(name, o, async (stopped) => {
    const lastLines: string[] = [];
    const onLine = (line: string) => {
      if (lastLines.push(line) > (o.tailLines ?? 15)) lastLines.shift();
      o.onLine(name, line);
    };
    try {
      const proc = await startProcess(command, args, { name, cwd, env, reap: false, bufferLines: 1, onLine });
      o.onSpawn?.(name, proc.pid);
      const e = await Promise.race([proc.exited, stopped]);
      if (e === 'stop') {
        const { signal } = await proc.kill('SIGTERM', { timeoutMs: o.stopTimeoutMs ?? 10_000 });
        return signal === 'SIGKILL' ? 'killed' : 'exited';
      }
      killGroup(proc.pid, 'SIGKILL'); // sweep anything left in its process group
      return { pid: proc.pid, ...e, lastLines };
    } catch (err) {
      const cause = (err as Error).cause;
      return { pid: undefined, code: null, signal: null, error: cause instanceof Error ? cause : (err as Error), lastLines };
    }
  });
}

/** A service started by its own launcher (redis-server by startRedis): its current process, and a restart in place. */
export type Restartable = { readonly pid: number; readonly exited: Promise<ProcessExit>; output(): string; restart(): Promise<void> };

/**
 * Like supervise, for a service whose owner started it and will stop it: when it exits on its own (a crash, an
 * out-of-memory kill), reports the crash with its last lines and restarts it in place (redis-server: the same port
 * and directory, so its AOF is replayed and clients reconnect to the same URL), with the same backoff. A restart
 * that fails counts as the next crash. `stop()` stops the watching only: call it before stopping the service.
 */
export function keepRunning(name: string, service: Restartable, o: Omit<SupervisorOptions, 'onLine' | 'stopTimeoutMs'>) {
  let crashed = false; // the first run watches the service as its owner started it
  return restarting(name, o, async (stopped) => {
    const error =
      crashed &&
      (await service.restart().then(
        () => void o.onSpawn?.(name, service.pid),
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      ));
    crashed = true;
    if (error) return { pid: service.pid, code: null, signal: null, error, lastLines: [] };
    const exit = await Promise.race([service.exited, stopped]);
    const tail = o.tailLines ?? 15;
    return exit === 'stop'
      ? 'not-running'
      : { pid: service.pid, ...exit, lastLines: service.output().split('\n').filter(Boolean).slice(-tail) };
  });
}
