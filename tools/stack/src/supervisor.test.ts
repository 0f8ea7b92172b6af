import { afterEach, describe, expect, it } from 'vitest';
import { isAlive, type ProcessExit } from '@tally/testing';
import { backoffDelay, keepRunning, supervise as startSupervisor, type CrashReport } from './supervisor';

const running: Array<ReturnType<typeof startSupervisor>> = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function supervise(script: string, opts: { stopTimeoutMs?: number; command?: string } = {}) {
  const lines: string[] = [];
  const crashes: CrashReport[] = [];
  /** Every pid the supervisor started, oldest first. */
  const pids: number[] = [];
  const sup = startSupervisor(
    { name: 't', command: opts.command ?? process.execPath, args: ['-e', script], cwd: process.cwd(), env: { PATH: '/usr/bin:/bin' } },
    {
      onLine: (_n, l) => lines.push(l),
      onSpawn: (_n, pid) => pids.push(pid),
      onCrash: (r) => crashes.push(r),
      backoff: { initialMs: 50, maxMs: 200, resetAfterMs: 60_000 },
      stopTimeoutMs: opts.stopTimeoutMs ?? 5_000,
      tailLines: 2,
    },
  );
  running.push(sup);
  return { sup, lines, crashes, pids };
}

describe('backoffDelay', () => {
  it('doubles from the initial delay up to the cap', () => {
    const p = { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000 };
    expect([1, 2, 3, 4, 7, 8, 20].map((n) => backoffDelay(n, p))).toEqual([500, 1000, 2000, 4000, 30_000, 30_000, 30_000]);
  });
});

describe('supervise', () => {
  it('reports a crash with the last lines and restarts with growing delays', async () => {
    const { sup, crashes, pids } = supervise(`console.log('one'); console.log('two'); console.error('boom'); process.exit(3)`);
    await until(() => crashes.length >= 4);
    await sup.stop();
    expect(crashes.slice(0, 4).map((c) => [c.code, c.attempt, c.restartInMs])).toEqual([
      [3, 1, 50],
      [3, 2, 100],
      [3, 3, 200],
      [3, 4, 200],
    ]);
    expect(crashes[0]!.lastLines).toHaveLength(2);
    expect(crashes[0]!.lastLines).toContain('boom');
    expect(pids.length).toBeGreaterThanOrEqual(4);
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it('does not restart after stop, and a SIGTERM-aware child exits by itself', async () => {
    const { sup, lines, crashes, pids } = supervise(
      `process.on('SIGTERM', () => process.exit(0)); console.log('up'); setInterval(() => {}, 1000)`,
    );
    await until(() => lines.includes('up'));
    const pid = pids.at(-1)!;
    expect(await sup.stop()).toBe('exited');
    expect(isAlive(pid)).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    expect(pids).toEqual([pid]);
    expect(crashes).toEqual([]);
  });

  it('SIGKILLs a child that ignores SIGTERM past the deadline', async () => {
    const { sup, lines, pids } = supervise(`process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000)`, {
      stopTimeoutMs: 300,
    });
    await until(() => lines.includes('up'));
    const pid = pids.at(-1)!;
    const t0 = Date.now();
    expect(await sup.stop()).toBe('killed');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(isAlive(pid)).toBe(false);
  });

  it('leaves nothing the child started behind (its process group)', async () => {
    const { sup, lines } = supervise(
      `const c = require('child_process').spawn('sleep', ['30'], { stdio: 'ignore' }); console.log('grandchild ' + c.pid); setInterval(() => {}, 1000)`,
    );
    await until(() => lines.some((l) => l.startsWith('grandchild ')));
    const grandchild = Number(lines.find((l) => l.startsWith('grandchild '))!.split(' ')[1]);
    expect(isAlive(grandchild)).toBe(true);
    await sup.stop();
    await until(() => !isAlive(grandchild), 2_000);
  });

  it('treats a command that cannot be started as a crash and keeps trying', async () => {
    const { sup, crashes, pids } = supervise('', { command: '/nonexistent/redis-server' });
    await until(() => crashes.length >= 2);
    await sup.stop();
    expect((crashes[0]!.error as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(crashes[0]!.pid).toBeUndefined();
    expect(pids).toEqual([]);
  });
});

describe('keepRunning (a service its owner started and stops: redis-server)', () => {
  /** A service whose process "exits" when told, and whose restarts fail while `failRestarts` is above 0. */
  function fakeService() {
    let pid = 100;
    let exit!: (e: ProcessExit) => void;
    const service = {
      failRestarts: 0,
      restarts: 0,
      get pid() {
        return pid;
      },
      exited: new Promise<ProcessExit>((r) => (exit = r)),
      output: () => 'line 1\nline 2\nline 3\n',
      crash(e: ProcessExit) {
        exit(e);
      },
      async restart() {
        service.restarts++;
        if (service.failRestarts-- > 0) throw new Error('port 6390 was taken by another process meanwhile');
        pid++;
        service.exited = new Promise<ProcessExit>((r) => (exit = r));
      },
    };
    return service;
  }

  it('reports each exit with the last lines, restarts in place, counts a failed restart as the next crash, and stops watching', async () => {
    const service = fakeService();
    const crashes: CrashReport[] = [];
    const spawned: number[] = [];
    const watch = keepRunning('redis-server', service, {
      onCrash: (r) => crashes.push(r),
      onSpawn: (_n, pid) => spawned.push(pid),
      backoff: { initialMs: 10, maxMs: 40, resetAfterMs: 60_000 },
      tailLines: 2,
    });
    service.failRestarts = 1;
    service.crash({ code: null, signal: 'SIGKILL' });
    await until(() => spawned.length === 1);
    expect(spawned).toEqual([101]);
    expect(crashes.map((c) => [c.signal, c.error?.message, c.lastLines, c.attempt, c.restartInMs])).toEqual([
      ['SIGKILL', undefined, ['line 2', 'line 3'], 1, 10],
      [null, 'port 6390 was taken by another process meanwhile', [], 2, 20],
    ]);

    await watch.stop();
    service.crash({ code: 1, signal: null });
    await new Promise((r) => setTimeout(r, 100));
    expect([crashes.length, service.restarts]).toEqual([2, 2]);
  });
});
