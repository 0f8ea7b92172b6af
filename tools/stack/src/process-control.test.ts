import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { isAlive } from './process-control';

const children: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

describe('isAlive', () => {
  it('is true for a running process, false once it is gone', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.push(child);
    expect(isAlive(child.pid!)).toBe(true);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect(isAlive(child.pid!)).toBe(false);
  });

  it('does not count a zombie (dead, never reaped by its parent) as alive', async () => {
    // `sleep 0` exits at once; its parent execs `sleep 30`, which never reaps it.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(parent);
    const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
    await new Promise((r) => setTimeout(r, 200));
    expect(() => process.kill(zombie, 0)).not.toThrow(); // the pid still exists…
    expect(isAlive(zombie)).toBe(false); // …but nothing runs
    expect(isAlive(parent.pid!)).toBe(true);
  });
});
