import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

/**
 * No orphans: every process the harness starts leads its own process group, and the group is SIGKILLed when
 * the test process ends, however it ends.
 * - Normal exit: a synchronous `exit` handler kills the groups and removes owned temp dirs.
 * - Death by signal (even SIGKILL): a tiny detached watchdog holds a pipe from this process; when the pipe
 *   closes it kills the groups still registered with it and removes the temp dirs.
 */
const groups = new Set<number>();
const dirs = new Set<string>();
let watchdog: ChildProcess | undefined;
let exitHookInstalled = false;

const WATCHDOG_SOURCE = `
const groups = new Set();
const dirs = new Set();
let buf = '';
let reaping = false;
const reap = () => {
  if (reaping) return;
  reaping = true;
  for (const g of groups) { try { process.kill(-g, 'SIGKILL'); } catch {} }
  // Give the killed servers a moment to stop writing before their data dirs go.
  setTimeout(() => {
    for (const d of dirs) { try { require('fs').rmSync(d, { recursive: true, force: true }); } catch {} }
    process.exit(0);
  }, dirs.size > 0 ? 200 : 0);
};
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
process.on('SIGHUP', () => {});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    const op = line.slice(0, 1), arg = line.slice(2);
    if (op === '+') groups.add(Number(arg));
    else if (op === '-') groups.delete(Number(arg));
    else if (op === 'd') dirs.add(arg);
    else if (op === 'u') dirs.delete(arg);
  }
});
process.stdin.on('end', reap);
process.stdin.on('close', reap);
process.stdin.on('error', reap);
`;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const g of groups) killGroup(g, 'SIGKILL');
    groups.clear();
    for (const d of dirs) {
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        // best effort: a dying child may still be writing into it
      }
    }
  });
}

function tellWatchdog(line: string): void {
  if (!watchdog) {
    watchdog = spawn(process.execPath, ['-e', WATCHDOG_SOURCE], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    watchdog.on('error', () => {
      watchdog = undefined;
    });
    watchdog.unref();
    const stdin = watchdog.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
    stdin?.on('error', () => {});
    stdin?.unref?.();
  }
  watchdog.stdin?.write(`${line}\n`);
}

/** Registers a child that leads its own process group (spawned with `detached: true`). */
export function trackGroup(pid: number): void {
  installExitHook();
  groups.add(pid);
  tellWatchdog(`+ ${pid}`);
}

/** Forgets a group once its leader has exited. */
export function untrackGroup(pid: number): void {
  if (!groups.delete(pid)) return;
  tellWatchdog(`- ${pid}`);
}

/** Removes `dir` when the test process exits (if it still exists then). */
export function removeOnExit(dir: string): void {
  installExitHook();
  dirs.add(dir);
  tellWatchdog(`d ${dir}`);
}

export function forgetDir(dir: string): void {
  if (dirs.delete(dir)) tellWatchdog(`u ${dir}`);
}

/** Sends `signal` to a whole process group; false when the group no longer exists. */
export function killGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Whether any process of the group led by `pid` is still alive. */
export function groupAlive(pid: number): boolean {
  return killGroup(pid, 0);
}
