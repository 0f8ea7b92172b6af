import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import readline from 'node:readline';
import { LineTail } from './log-lines';
import { signalChild, stopChild, useProcessGroups, type StopOutcome } from './process-control';

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

export const defaultBackoff: BackoffPolicy = { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };

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
  spawn?: (command: string, args: string[], options: SpawnOptions) => ChildProcess;
}

/**
 * Keeps one child process running: forwards its output line by line, and when it exits on its own
 * reports the crash with its last lines and starts it again after an exponential backoff.
 */
export class Supervisor {
  private child: ChildProcess | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private consecutiveCrashes = 0;
  private crashCount = 0;
  private readonly tail: LineTail;
  private readonly backoff: BackoffPolicy;
  private readonly stopTimeoutMs: number;
  private readonly spawnFn: NonNullable<SupervisorOptions['spawn']>;
  /** Every pid this supervisor ever started, oldest first. */
  readonly pids: number[] = [];

  constructor(
    readonly spec: ProcessSpec,
    private readonly hooks: SupervisorHooks,
    options: SupervisorOptions = {},
  ) {
    this.tail = new LineTail(options.tailLines ?? 30);
    this.backoff = options.backoff ?? defaultBackoff;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
    this.spawnFn = options.spawn ?? nodeSpawn;
  }

  get name(): string {
    return this.spec.name;
  }

  /** The running child's pid, if any. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** How many times the process ended without being asked to. */
  get crashes(): number {
    return this.crashCount;
  }

  start(): void {
    if (this.stopping || this.child) return;
    const startedAt = Date.now();
    const child = this.spawnFn(this.spec.command, this.spec.args, {
      cwd: this.spec.cwd,
      env: this.spec.env as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: useProcessGroups,
    });
    this.child = child;
    this.tail.clear();
    if (child.pid !== undefined) {
      this.pids.push(child.pid);
      this.hooks.onSpawn?.(this.spec.name, child.pid);
    }
    const streamsDone: Promise<void>[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
      rl.on('line', (line) => {
        this.tail.push(line);
        this.hooks.onLine(this.spec.name, line);
      });
      streamsDone.push(new Promise((resolve) => rl.once('close', resolve)));
    }

    let ended = false;
    const onEnd = (code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
      if (ended) return;
      ended = true;
      // Output still in the pipes belongs in the report; a stuck pipe does not hold the restart up.
      const drained = Promise.race([Promise.all(streamsDone), new Promise((r) => setTimeout(r, 500))]);
      void drained.then(() => {
        if (this.child === child) this.child = undefined;
        if (this.stopping) return;
        signalChild(child, 'SIGKILL'); // sweep anything left in its process group
        const uptimeMs = Date.now() - startedAt;
        if (uptimeMs >= this.backoff.resetAfterMs) this.consecutiveCrashes = 0;
        this.consecutiveCrashes += 1;
        this.crashCount += 1;
        const restartInMs = backoffDelay(this.consecutiveCrashes, this.backoff);
        this.hooks.onCrash?.({
          name: this.spec.name,
          pid: child.pid,
          code,
          signal,
          ...(error ? { error } : {}),
          uptimeMs,
          lastLines: this.tail.lines(),
          attempt: this.consecutiveCrashes,
          restartInMs,
        });
        this.restartTimer = setTimeout(() => {
          this.restartTimer = undefined;
          this.start();
        }, restartInMs);
      });
    };
    child.once('exit', (code, signal) => onEnd(code, signal));
    child.on('error', (err) => {
      // 'error' also reports a failed kill; only a failed spawn (no pid) ends the process here.
      if (child.pid === undefined) onEnd(null, null, err);
    });
  }

  /** Stops the child (SIGTERM, then SIGKILL after the deadline) and cancels any pending restart. */
  async stop(): Promise<StopOutcome> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    if (!child) return 'not-running';
    const outcome = await stopChild(child, this.stopTimeoutMs);
    this.child = undefined;
    return outcome;
  }
}
