import { Writable } from 'node:stream';
import { startProcess } from '@tally/testing';
import { describe, expect, it } from 'vitest';
import { createLogger, installShutdown, runShutdown, type ShutdownStep } from './index';

const fixture = new URL('../test/fixtures/shutdown-app.ts', import.meta.url).pathname;

function capture() {
  const lines: Array<Record<string, any>> = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: createLogger({ name: 't', destination }), lines };
}

describe('runShutdown', () => {
  it('runs the steps in order and resolves true', async () => {
    const { log, lines } = capture();
    const order: string[] = [];
    const step = (name: string, ms = 0): ShutdownStep => ({
      name,
      run: () => new Promise((resolve) => setTimeout(() => resolve(order.push(name)), ms)),
    });
    expect(await runShutdown(log, [step('a', 30), step('b'), step('c', 10)])).toBe(true);
    expect(order).toEqual(['a', 'b', 'c']);
    expect(lines.map((l) => [l['step'], l['msg']])).toEqual([
      ['a', 'shutdown step done'],
      ['b', 'shutdown step done'],
      ['c', 'shutdown step done'],
    ]);
  });

  it('goes on past a failing or overrunning step and resolves false', async () => {
    const { log, lines } = capture();
    const order: string[] = [];
    const ok = await runShutdown(log, [
      {
        name: 'explode',
        run: () => {
          throw new Error('boom');
        },
      },
      { name: 'hang', run: () => new Promise(() => {}), timeoutMs: 50 },
      { name: 'last', run: async () => order.push('last') },
    ]);
    expect(ok).toBe(false);
    expect(order).toEqual(['last']);
    expect(lines.map((l) => [l['level'], l['step'], l['msg']])).toEqual([
      [50, 'explode', 'shutdown step failed'],
      [50, 'hang', 'shutdown step overran its deadline'],
      [30, 'last', 'shutdown step done'],
    ]);
    expect(lines[0]!['err']['message']).toBe('boom');
    expect(lines[1]!['timeoutMs']).toBe(50);
  });
});

describe('installShutdown', () => {
  it('handles the first signal once, ignores the next, then exits with the outcome', async () => {
    const { log, lines } = capture();
    const before = process.listeners('SIGUSR2');
    const exits: number[] = [];
    let release!: () => void;
    const isShuttingDown = installShutdown(log, [{ name: 'drain', run: () => new Promise<void>((resolve) => (release = resolve)) }], {
      signals: ['SIGUSR2'],
      exit: (code) => exits.push(code),
    });
    try {
      expect(isShuttingDown()).toBe(false);
      process.emit('SIGUSR2', 'SIGUSR2');
      expect(isShuttingDown()).toBe(true);
      process.emit('SIGUSR2', 'SIGUSR2');
      await new Promise((r) => setTimeout(r, 10));
      release();
      await new Promise((r) => setTimeout(r, 10));
      expect(exits).toEqual([0]);
      expect(lines.map((l) => l['msg'])).toEqual([
        'shutting down',
        'already shutting down; signal ignored',
        'shutdown step done',
        'shutdown complete',
      ]);
    } finally {
      for (const l of process.listeners('SIGUSR2')) if (!before.includes(l)) process.removeListener('SIGUSR2', l);
    }
  });

  it('on a real SIGTERM runs every step, ignores a second signal and exits 0', async () => {
    const app = await startProcess(process.execPath, ['--import', 'tsx', fixture, 'ok'], { name: 'shutdown-ok' });
    await app.waitForLine(/"msg":"ready"/);
    app.signal('SIGTERM');
    await app.waitForLine(/"step":"stop intake"/);
    app.signal('SIGINT'); // during the 300 ms drain
    expect(await app.exited).toEqual({ code: 0, signal: null });
    const logs = app
      .output()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, any>);
    expect(logs.map((l) => [l['msg'], l['step'] ?? l['signal'] ?? l['exitCode'] ?? l['shuttingDown']])).toEqual([
      ['ready', false],
      ['shutting down', 'SIGTERM'],
      ['intake stopped', true],
      ['shutdown step done', 'stop intake'],
      ['already shutting down; signal ignored', 'SIGINT'],
      ['shutdown step done', 'drain'],
      ['shutdown step done', 'quit redis'],
      ['shutdown complete', 0],
    ]);
  });

  it.each([
    ['fail', 'explode'],
    ['hang', 'hang'],
  ])('exits 1 when a step %ss', async (mode, step) => {
    const app = await startProcess(process.execPath, ['--import', 'tsx', fixture, mode], { name: `shutdown-${mode}` });
    await app.waitForLine(/"msg":"ready"/);
    app.signal('SIGTERM');
    expect(await app.exited).toEqual({ code: 1, signal: null });
    expect(app.output()).toContain(`"step":"${step}"`);
    expect(app.output()).toContain('"step":"quit redis"');
  });
});
