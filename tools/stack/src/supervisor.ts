import { killGroup, startProcess, type ProcessHandle } from '@tally/testing';

export type StopOutcome = 'not-running' | 'exited' | 'killed';

export interface ProcessSpec {
  /** Shown in front of every output line. */
  name: string;
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string | undefined>;
}

export interface BackoffPolicy {
  /** Delay before the first restart. */
  initialMs: number;
  /** The delay doubles on every consecutive crash up to this. */
  maxMs: number;
  /** A process that ran this long before crashing starts again from `initialMs`. */
  resetAfterMs: number;
}

const defaultBackoff: BackoffPolicy = { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };

/** Delay before restart number `attempt` (1-based). */
export function backoffDelay(attempt: number, policy: BackoffPolicy): number {
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt - 1));
}

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

export interface SupervisorHooks {
  onLine(name: string, line: string): void;
  onSpawn?(name: string, pid: number): void;
  onCrash?(report: CrashReport): void;
}

export interface SupervisorOptions {
  backoff?: BackoffPolicy;
  /** Lines kept for the crash report. */
  tailLines?: number;
  /** Grace period after SIGTERM before SIGKILL. */
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
  private consecutiveCrashes = 0;
  private tail: string[] = [];
  private readonly tailLines: number;
  private readonly backoff: BackoffPolicy;
  private readonly stopTimeoutMs: number;
  /** Every pid this supervisor ever started, oldest first. */
  readonly pids: number[] = [];

  constructor(
    readonly spec: ProcessSpec,
    private readonly hooks: SupervisorHooks,
    options: SupervisorOptions = {},
  ) {
    this.tailLines = options.tailLines ?? 30;
    this.backoff = options.backoff ?? defaultBackoff;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
  }

  get name(): string {
    return this.spec.name;
  }

  /** The running child's pid, if any. */
  get pid(): number | undefined {
    return this.proc?.exit ? undefined : this.proc?.pid;
  }

  start(): void {
    if (this.stopping || this.proc || this.starting) return;
    const startedAt = Date.now();
    this.tail = [];
    const { name, command, args, cwd, env } = this.spec;
    this.starting = startProcess(command, args, {
      name,
      cwd,
      env,
      reap: false,
      bufferLines: 1,
      onLine: (line) => {
        this.tail = [...this.tail, line].slice(-this.tailLines);
        this.hooks.onLine(name, line);
      },
    }).then(
      (proc) => {
        this.starting = undefined;
        this.proc = proc;
        this.pids.push(proc.pid);
        this.hooks.onSpawn?.(name, proc.pid);
        void proc.exited.then((e) => {
          if (this.proc === proc) this.proc = undefined;
          killGroup(proc.pid, 'SIGKILL'); // sweep anything left in its process group
          this.crashed(startedAt, e.code, e.signal, proc.pid);
        });
      },
      (err: Error) => {
        this.starting = undefined;
        this.crashed(startedAt, null, null, undefined, err.cause instanceof Error ? err.cause : err);
      },
    );
  }

  private crashed(startedAt: number, code: number | null, signal: NodeJS.Signals | null, pid: number | undefined, error?: Error): void {
    if (this.stopping) return;
    const uptimeMs = Date.now() - startedAt;
    if (uptimeMs >= this.backoff.resetAfterMs) this.consecutiveCrashes = 0;
    this.consecutiveCrashes += 1;
    const restartInMs = backoffDelay(this.consecutiveCrashes, this.backoff);
    this.hooks.onCrash?.({
      name: this.spec.name,
      pid,
      code,
      signal,
      ...(error ? { error } : {}),
      uptimeMs,
      lastLines: this.tail,
      attempt: this.consecutiveCrashes,
      restartInMs,
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.start();
    }, restartInMs);
  }

  /** Stops the child (SIGTERM, then SIGKILL after the deadline, then its whole group) and cancels any pending restart. */
  async stop(): Promise<StopOutcome> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    await this.starting;
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exit) return 'not-running';
    const exit = await proc.kill('SIGTERM', { timeoutMs: this.stopTimeoutMs });
    return exit.signal === 'SIGKILL' ? 'killed' : 'exited';
  }
}
