import { readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';

/** Children run in their own process group (not on Windows), so a terminal's Ctrl-C reaches only the stack,
 * which then stops them in order: apps first, Redis last. */
export const useProcessGroups = process.platform !== 'win32';

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
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
  return !isZombie(pid);
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false; // no /proc here, or gone meanwhile
  }
}

/** Signals the child's whole process group when it has one, else the child. Never throws. */
export function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    if (useProcessGroups) process.kill(-child.pid, signal);
    else child.kill(signal);
  } catch {
    // already gone
  }
}

/** Resolves true once the child has exited, false when `timeoutMs` passes first. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child) || child.pid === undefined) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

export type StopOutcome = 'not-running' | 'exited' | 'killed';

/**
 * SIGTERM (or `signal`), wait up to `deadlineMs`, then SIGKILL. Afterwards the process group is swept
 * with SIGKILL so nothing the child started outlives it.
 */
export async function stopChild(child: ChildProcess, deadlineMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<StopOutcome> {
  if (child.pid === undefined || hasExited(child)) {
    signalChild(child, 'SIGKILL');
    return 'not-running';
  }
  signalChild(child, signal);
  if (await waitForExit(child, deadlineMs)) {
    signalChild(child, 'SIGKILL');
    return 'exited';
  }
  signalChild(child, 'SIGKILL');
  await waitForExit(child, 5_000);
  return 'killed';
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
