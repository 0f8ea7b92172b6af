import { killGroup, startProcess, type ProcessHandle } from '@tally/testing';

export interface ProcessSpec {
  /** Shown in front of every output line. */
  name: string;
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string | undefined>;
}

/** Restart delays: `initialMs`, doubling on every consecutive crash up to `maxMs`; a run of `resetAfterMs` starts over. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  resetAfterMs: number;
}

/** Delay before restart number `attempt` (1-based). */
export const backoffDelay = (attempt: number, p: BackoffPolicy): number => Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, attempt - 1));

export interface CrashReport {
  name: string;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
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

/**
 * Keeps one child process running (in its own process group, started by the shared launcher in
 * `@tally/testing`): forwards its output line by line, and when it exits on its own reports the crash with its
 * last lines and starts it again after an exponential backoff. Its children are not tied to this process's
 * life: a stack that dies leaves them to the next start (run-file.ts), which stops them gently.
 */
export class Supervisor {
  private proc: ProcessHandle | undefined;
  private starting: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private crashes = 0;
  /** Every pid this supervisor ever started, oldest first. */
  readonly pids: number[] = [];

  constructor(
    readonly spec: ProcessSpec,
    private readonly o: SupervisorOptions,
  ) {}

  /** The running child's pid, if any. */
  get pid(): number | undefined {
    return this.proc?.exit ? undefined : this.proc?.pid;
  }

  start(): void {
    if (this.stopping || this.proc || this.starting) return;
    const startedAt = Date.now();
    const tail: string[] = [];
    const { name, command, args, cwd, env } = this.spec;
    const crashed = (pid: number | undefined, code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
      if (this.stopping) return;
      const backoff = this.o.backoff ?? { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };
      const uptimeMs = Date.now() - startedAt;
      this.crashes = uptimeMs >= backoff.resetAfterMs ? 1 : this.crashes + 1;
      const restartInMs = backoffDelay(this.crashes, backoff);
      this.o.onCrash?.({ name, pid, code, signal, ...(error && { error }), uptimeMs, lastLines: tail, attempt: this.crashes, restartInMs });
      this.restartTimer = setTimeout(() => this.start(), restartInMs);
    };
    const onLine = (line: string) => {
      if (tail.push(line) > (this.o.tailLines ?? 15)) tail.shift();
      this.o.onLine(name, line);
    };
    this.starting = startProcess(command, args, { name, cwd, env, reap: false, bufferLines: 1, onLine }).then(
      (proc) => {
        this.starting = undefined;
        this.proc = proc;
        this.pids.push(proc.pid);
        this.o.onSpawn?.(name, proc.pid);
        void proc.exited.then((e) => {
          if (this.proc === proc) this.proc = undefined;
          killGroup(proc.pid, 'SIGKILL'); // sweep anything left in its process group
          crashed(proc.pid, e.code, e.signal);
        });
      },
      (err: Error) => {
        this.starting = undefined;
        crashed(undefined, null, null, err.cause instanceof Error ? err.cause : err);
      },
    );
  }

  /** Stops the child (SIGTERM, then SIGKILL after the deadline, then its whole group) and cancels any pending restart. */
  async stop(): Promise<'not-running' | 'exited' | 'killed'> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    await this.starting;
    const proc = this.proc;
    if (!proc || proc.exit) return 'not-running';
    const exit = await proc.kill('SIGTERM', { timeoutMs: this.o.stopTimeoutMs ?? 10_000 });
    return exit.signal === 'SIGKILL' ? 'killed' : 'exited';
  }
}
