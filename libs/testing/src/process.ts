import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rawEnv } from '@tally/config';
import { ServiceStartError, WaitTimeoutError } from './errors';
import { groupAlive, killGroup, trackGroup, untrackGroup } from './reaper';

export interface StartProcessOptions {
  /** Added to (and overriding) the environment of the test process; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** Shown in messages and in echoed output. Default: the command. */
  name?: string;
  /** Default: the current working directory. */
  cwd?: string;
  /** Lines of output kept for `output()` and error messages. Default 500. */
  bufferLines?: number;
  /** Also write every output line to this process's stderr, prefixed with the name (for debugging). */
  echo?: boolean;
  /** Called with every output line as it arrives. */
  onLine?: (text: string, stream: 'stdout' | 'stderr') => void;
  /**
   * SIGKILL the process group when this process exits, however it exits (default true, for tests). A launcher
   * that stops its children itself, and whose children must outlive a crash of it, passes false.
   */
  reap?: boolean;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface WaitForLineOptions {
  /** Default 15 s. */
  timeoutMs?: number;
  /** Only match lines printed after this call (default: any line still in the buffer matches too). */
  fromNow?: boolean;
}

export interface ProcessHandle {
  readonly name: string;
  readonly pid: number;
  /** Settles when the process has exited; never rejects. */
  readonly exited: Promise<ProcessExit>;
  /** The exit, once it happened. */
  readonly exit: ProcessExit | undefined;
  /** The last `bufferLines` lines of stdout and stderr, interleaved, stderr lines marked `[stderr]`. */
  output(): string;
  /** Resolves with the match of the first line matching `pattern`; rejects on timeout or exit, with the output. */
  waitForLine(pattern: RegExp, opts?: WaitForLineOptions): Promise<RegExpMatchArray>;
  /**
   * Sends a terminating `signal` (default SIGTERM) to the process group and waits for the exit, sending SIGKILL
   * after `timeoutMs` (default 10 s). Resolves at once when it has already exited.
   */
  kill(signal?: NodeJS.Signals, opts?: { timeoutMs?: number }): Promise<ProcessExit>;
  /** Sends a signal without waiting (SIGSTOP / SIGCONT to freeze and thaw). */
  signal(signal: NodeJS.Signals): void;
}

const started: Array<{ pid: number; what: string }> = [];

/** Every process startProcess started in this process, oldest first, with its name: to check that none outlives its owner. */
export function startedProcesses(): ReadonlyArray<{ pid: number; what: string }> {
  return started;
}

interface Line {
  seq: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

/**
 * Spawns a child process (e.g. `node --import tsx apps/x/src/main.ts`) in its own process group, collecting its
 * output. The group is SIGKILLed when the test process exits, however it exits.
 */
export async function startProcess(cmd: string, args: readonly string[], opts: StartProcessOptions = {}): Promise<ProcessHandle> {
  const name = opts.name ?? cmd;
  const bufferLines = opts.bufferLines ?? 500;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...rawEnv(), ...opts.env })) if (v !== undefined) env[k] = v;

  const child = spawn(cmd, args, { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? `"${cmd}" was not found on PATH` : err.message;
      reject(new ServiceStartError(`cannot start ${name}: ${why}`, { cause: err }));
    });
  });
  started.push({ pid, what: name });
  if (opts.reap !== false) trackGroup(pid);
  // After a successful spawn 'error' only reports a failed signal delivery; never let it crash the test process.
  child.on('error', () => undefined);

  const lines: Line[] = [];
  let seq = 0;
  const listeners = new Set<(line: Line) => void>();
  const push = (stream: Line['stream'], text: string): void => {
    const line = { seq: seq++, stream, text };
    lines.push(line);
    if (lines.length > bufferLines) lines.shift();
    if (opts.echo) process.stderr.write(`${name}${stream === 'stderr' ? '!' : ''}| ${text}\n`);
    opts.onLine?.(text, stream);
    for (const l of listeners) l(line);
  };
  const pending = { stdout: '', stderr: '' };
  for (const stream of ['stdout', 'stderr'] as const) {
    const readable = child[stream]!;
    readable.setEncoding('utf8');
    readable.on('data', (chunk: string) => {
      const parts = (pending[stream] + chunk).split('\n');
      pending[stream] = parts.pop() ?? '';
      for (const p of parts) push(stream, p.endsWith('\r') ? p.slice(0, -1) : p);
    });
  }

  let exit: ProcessExit | undefined;
  const exited = new Promise<ProcessExit>((resolve) => {
    const finish = (e: ProcessExit): void => {
      if (exit) return;
      for (const stream of ['stdout', 'stderr'] as const) if (pending[stream]) push(stream, pending[stream]);
      pending.stdout = pending.stderr = '';
      // Grandchildren may outlive the leader; keep the group on the kill list until it is empty.
      if (!groupAlive(pid)) untrackGroup(pid);
      exit = e;
      resolve(e);
    };
    // 'close' comes after the output pipes ended, so every line is in the buffer by then. A grandchild that
    // inherited the pipes can hold them open, so do not wait for 'close' long after 'exit'.
    child.once('close', (code, signal) => finish({ code, signal }));
    child.once('exit', (code, signal) => setTimeout(() => finish({ code, signal }), 500).unref());
  });

  const output = (): string => lines.map((l) => (l.stream === 'stderr' ? `[stderr] ${l.text}` : l.text)).join('\n');
  const describeExit = (e: ProcessExit): string => (e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`);

  const handle: ProcessHandle = {
    name,
    pid,
    exited,
    get exit() {
      return exit;
    },
    output,
    waitForLine(pattern, wopts = {}) {
      const timeoutMs = wopts.timeoutMs ?? 15_000;
      const fromSeq = wopts.fromNow ? seq : 0;
      return new Promise<RegExpMatchArray>((resolve, reject) => {
        for (const l of lines) {
          const m = l.seq >= fromSeq ? l.text.match(pattern) : null;
          if (m) return resolve(m);
        }
        const settle = (fn: () => void): void => {
          clearTimeout(timer);
          listeners.delete(onLine);
          fn();
        };
        const onLine = (l: Line): void => {
          const m = l.text.match(pattern);
          if (m) settle(() => resolve(m));
        };
        const timer = setTimeout(
          () =>
            settle(() =>
              reject(new WaitTimeoutError(`${name} printed no line matching ${pattern} within ${timeoutMs}ms; last output:\n${output()}`)),
            ),
          timeoutMs,
        );
        listeners.add(onLine);
        void exited.then((e) => {
          // Lines flushed at close were already offered to onLine; if none matched, it never will.
          if (listeners.has(onLine)) {
            settle(() =>
              reject(
                new ServiceStartError(`${name} ${describeExit(e)} before printing a line matching ${pattern}; last output:\n${output()}`),
              ),
            );
          }
        });
      });
    },
    async kill(signal = 'SIGTERM', kopts = {}) {
      if (exit) return exit;
      killGroup(pid, signal);
      const timeoutMs = kopts.timeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      const escalate = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          killGroup(pid, 'SIGKILL');
          resolve();
        }, timeoutMs);
      });
      await Promise.race([exited, escalate]);
      clearTimeout(timer);
      const result = await exited;
      // The leader is gone; grandchildren it left in the group are not wanted either.
      if (groupAlive(pid)) killGroup(pid, 'SIGKILL');
      untrackGroup(pid);
      return result;
    },
    signal(signal) {
      if (!exit) killGroup(pid, signal);
    },
  };
  return handle;
}

/**
 * True while a process with this pid runs (EPERM: it exists but belongs to someone else). A zombie — dead,
 * waiting for a parent (often init) to reap it — does not count.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const state = procStat(pid)?.[0]; // undefined: no /proc here, or gone meanwhile
  return state !== 'Z' && state !== 'X';
}

/** /proc/<pid>/<file> (Linux); undefined when it cannot be read (no /proc here, or the process is gone). */
export function readProc(pid: number, file: 'stat' | 'status'): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'latin1');
  } catch {
    return undefined;
  }
}

/** The fields of /proc/<pid>/stat after the command name: [0] is the state, [11] utime and [12] stime (clock ticks). */
export function procStat(pid: number): string[] | undefined {
  const stat = readProc(pid, 'stat');
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Polls a process that is not our child until it is gone; false when `timeoutMs` passes first. */
export async function waitForPidGone(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
