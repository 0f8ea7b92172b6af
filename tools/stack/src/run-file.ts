import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { StackError } from './errors';
import { isAlive, waitForPidGone } from '@tally/testing';

/**
 * `<dataDir>/stack.json`: which processes a running stack owns. It stops a second stack from sharing the
 * data directory (two redis-servers on one AOF), and lets the next start clean up after a stack that was
 * SIGKILLed and left its children behind.
 */
export interface RunState {
  stackPid: number;
  startedAt: string;
  /** Child pid by name; `match` is a piece of its command line, checked before we signal it. */
  children: Record<string, { pid: number; match: string }>;
  /** Where the stack's Redis and DynamoDB are, once they run: what `npm run dlq` and `npm run tenants` use. */
  backends?: StackBackends;
}

export interface StackBackends {
  redisUrl: string;
  dynamoEndpoint: string;
  table: string;
  region: string;
}

export class RunFile {
  readonly file: string;
  private state: RunState;

  constructor(dataDir: string, stackPid: number = process.pid) {
    this.file = path.join(dataDir, 'stack.json');
    this.state = { stackPid, startedAt: new Date().toISOString(), children: {} };
  }

  read(): RunState | undefined {
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')) as RunState;
    } catch {
      return undefined;
    }
  }

  /**
   * Refuses to run beside a live stack on the same data directory, and stops the leftovers of a dead one
   * (only processes whose command line still matches what it started). Returns one message per leftover.
   */
  async claim(readCmdline: (pid: number) => string | undefined = procCmdline): Promise<string[]> {
    const previous = this.read();
    const notes: string[] = [];
    if (previous && previous.stackPid !== this.state.stackPid && isAlive(previous.stackPid) && isStack(readCmdline(previous.stackPid))) {
      throw new StackError(
        'TALLY_ERR_STACK_RUNNING',
        `another Tally stack (pid ${previous.stackPid}) is running on ${path.dirname(this.file)}; stop it first, or set TALLY_DATA_DIR to another directory`,
      );
    }
    for (const [name, { pid, match }] of Object.entries(previous?.children ?? {})) {
      if (!isAlive(pid)) continue;
      const cmdline = readCmdline(pid);
      if (cmdline === undefined) {
        notes.push(`${name} (pid ${pid}) from a previous run may still be running; cannot check its command line here`);
        continue;
      }
      if (!cmdline.includes(match)) continue; // the pid was reused by something else
      try {
        process.kill(pid, 'SIGTERM');
        if (!(await waitForPidGone(pid, 10_000))) process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      notes.push(`stopped ${name} (pid ${pid}) left running by a previous stack that did not shut down`);
    }
    this.write();
    return notes;
  }

  setChild(name: string, pid: number, match: string): void {
    this.state.children[name] = { pid, match };
    this.write();
  }

  setBackends(backends: StackBackends): void {
    this.state.backends = backends;
    this.write();
  }

  remove(): void {
    rmSync(this.file, { force: true });
  }

  private write(): void {
    mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state, null, 2) + '\n');
    renameSync(tmp, this.file);
  }
}

/** The stack running on `dataDir` (its pid alive and still the stack) with its backends, or undefined. */
export function runningStack(
  dataDir: string,
  readCmdline: (pid: number) => string | undefined = procCmdline,
): { pid: number; file: string; backends: StackBackends } | undefined {
  const file = new RunFile(dataDir);
  const state = file.read();
  if (!state?.backends || !isAlive(state.stackPid) || !isStack(readCmdline(state.stackPid))) return undefined;
  return { pid: state.stackPid, file: file.file, backends: state.backends };
}

function isStack(cmdline: string | undefined): boolean {
  // Unknown (no /proc): assume it is one rather than risk two stacks on one data directory.
  return cmdline === undefined || cmdline.includes('stack/src/main');
}

const hasProc = existsSync('/proc/self/cmdline');

/** The command line of `pid` from /proc (Linux): '' when the process is gone, undefined without /proc. */
export function procCmdline(pid: number): string | undefined {
  if (!hasProc) return undefined;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}
