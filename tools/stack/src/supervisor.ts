import { setTimeout as delay } from 'node:timers/promises';
import { killGroup, startProcess, type ProcessExit, type RedisHandle, type StartProcessOptions } from '@tally/testing';

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

interface SupervisorOptions {
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
/** One run of a process: its exit, its output lines, and how to stop it (none when its owner stops it). */
type Run = { pid: number; exited: Promise<ProcessExit>; lines(): string[]; stop?(): Promise<StopOutcome> };

/**
 * Starts a run (`start(true)` for each restart) and, whenever it exits or cannot start, reports the crash and starts it
 * again after the backoff. `stop()` cancels any pending restart and ends the current run with its own `stop`.
 */
function restarting(name: string, o: Partial<SupervisorOptions>, start: (restart: boolean) => Promise<Run>) {
  const stopping = new AbortController();
  const stopped = new Promise<'stop'>((resolve) => stopping.signal.addEventListener('abort', () => resolve('stop')));
  const backoff = o.backoff ?? { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };
  const running = (async (): Promise<StopOutcome> => {
    for (let attempt = 1, runs = 0; ; attempt++, runs++) {
      const startedAt = Date.now();
      let exit: Pick<CrashReport, 'pid' | 'code' | 'signal' | 'error' | 'lastLines'>;
      try {
        const run = await start(runs > 0);
        const e = await Promise.race([run.exited, stopped]);
        if (e === 'stop') return (await run.stop?.()) ?? 'not-running';
        exit = { pid: run.pid, ...e, lastLines: run.lines().slice(-(o.tailLines ?? 15)) };
      } catch (err) {
        exit = { pid: undefined, code: null, signal: null, error: err instanceof Error ? err : new Error(String(err)), lastLines: [] };
      }
      if (stopping.signal.aborted) return 'not-running';
      if (Date.now() - startedAt >= backoff.resetAfterMs) attempt = 1;
      const restartInMs = backoffDelay(attempt, backoff);
      o.onCrash?.({ name, ...exit, uptimeMs: Date.now() - startedAt, attempt, restartInMs });
      if (!(await delay(restartInMs, true, { signal: stopping.signal }).catch(() => false))) return 'not-running';
    }
  })();
  return { stop: (): Promise<StopOutcome> => (stopping.abort(), running) };
}

/**
 * Keeps one child process running in its own process group, forwarding its output line by line; when it exits on its
 * own, reports the crash with its last lines and starts it again after an exponential backoff. Not reaped: a stack
 * that dies leaves it to the next start (run-file.ts), which stops it gently. `stop()`: SIGTERM, SIGKILL after the deadline.
 */
export function supervise({ name, command, args, cwd, env }: ProcessSpec, o: SupervisorOptions) {
  return restarting(name, o, async () => {
    const lines: string[] = [];
    const onLine = (line: string) => {
      if (lines.push(line) > (o.tailLines ?? 15)) lines.shift();
      o.onLine(name, line);
    };
    const proc = await startProcess(command, args, { name, cwd, env, reap: false, bufferLines: 1, onLine }).catch((err: Error) => {
      throw err.cause instanceof Error ? err.cause : err;
    });
    o.onSpawn?.(name, proc.pid);
    return {
      pid: proc.pid,
      // Sweep anything left in its process group.
      exited: proc.exited.finally(() => killGroup(proc.pid, 'SIGKILL')),
      lines: () => lines,
      stop: async () => ((await proc.kill('SIGTERM', { timeoutMs: o.stopTimeoutMs ?? 10_000 })).signal === 'SIGKILL' ? 'killed' : 'exited'),
    };
  });
}

type Restartable = Pick<RedisHandle, 'pid' | 'exited' | 'output' | 'restart'>;

/**
 * Like supervise, for a service whose owner started it and stops it: restarts it in place (redis-server: same port and
 * directory, its AOF replayed), a restart that fails counting as the next crash. `stop()` stops the watching only:
 * call it before stopping the service.
 */
export function keepRunning(name: string, service: Restartable, o: Omit<SupervisorOptions, 'onLine' | 'stopTimeoutMs'>) {
  return restarting(name, o, async (restart) => {
    if (restart) {
      await service.restart();
      o.onSpawn?.(name, service.pid);
    }
    return { pid: service.pid, exited: service.exited, lines: () => service.output().split('\n').filter(Boolean) };
  });
}
