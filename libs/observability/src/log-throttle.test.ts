import { describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import { errorKey } from './error-key';
import { logEmitterErrors, throttleLog } from './log-throttle';

function recorder() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: Record<string, unknown>, msg: string) => void lines.push({ level, obj, msg });
  return { lines, log: { warn: at('warn'), error: at('error'), info: at('info') } as never };
}

describe('throttleLog', () => {
  it('logs one line per key and window, then reports how many were dropped', () => {
    let t = 1_000_000;
    const { lines, log } = recorder();
    const throttled = throttleLog(log, { windowMs: 10_000, now: () => t });
    for (let i = 0; i < 500; i++) throttled.log('warn', 'redis', { n: i }, 'redis connection error');
    throttled.log('warn', 'other', {}, 'another warning');
    expect(lines.map((l) => l.msg)).toEqual(['redis connection error', 'another warning']);
    t += 10_000;
    throttled.log('warn', 'redis', { n: 500 }, 'redis connection error');
    expect(lines).toHaveLength(3);
    expect(lines[2]!.obj).toEqual({ n: 500, suppressed: 499 });
  });

  it('remembers a bounded number of keys', () => {
    const { lines, log } = recorder();
    const throttled = throttleLog(log, { maxKeys: 2, now: () => 0 });
    for (const k of ['a', 'b', 'c', 'a']) throttled.log('warn', k, {}, k);
    expect(lines.map((l) => l.msg)).toEqual(['a', 'b', 'c', 'a']);
  });
});

describe('logEmitterErrors', () => {
  it('a Redis outage (hundreds of reconnect errors from several connections) logs one line per distinct error', () => {
    const { lines, log } = recorder();
    const connections = [new EventEmitter(), new EventEmitter(), new EventEmitter()];
    logEmitterErrors(log, 'redis', connections, { now: () => 0 });
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 400; i++) for (const c of connections) c.emit('error', refused);
    connections[0]!.emit('error', new Error('Connection is closed.'));
    expect(lines.map((l) => l.obj)).toEqual([
      { source: 'redis', err: { message: 'connect ECONNREFUSED 127.0.0.1:6379', code: 'ECONNREFUSED' } },
      { source: 'redis', err: { message: 'Connection is closed.', code: undefined } },
    ]);
    expect(lines.every((l) => l.level === 'warn' && !('stack' in l.obj))).toBe(true);
  });

  it('Sentinels down: one line for the rounds whose message names a growing delay', () => {
    const { lines, log } = recorder();
    const conn = new EventEmitter();
    logEmitterErrors(log, 'redis', [conn], { now: () => 0 });
    // ioredis' SentinelConnector: one error per round of the Sentinels, naming the delay before the next.
    for (let delay = 10; delay <= 1_000; delay += 10)
      conn.emit(
        'error',
        new Error(`All sentinels are unreachable. Retrying from scratch after ${delay}ms. Last error: Connection is closed.`),
      );
    expect(lines.map((l) => (l.obj['err'] as { message: string }).message)).toEqual([
      'All sentinels are unreachable. Retrying from scratch after 10ms. Last error: Connection is closed.',
    ]);
  });
});

describe('errorKey', () => {
  it('is the code and message less the delays and counts that change at each repeat, not the addresses', () => {
    const refused = (port: number) => Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:${port}`), { code: 'ECONNREFUSED' });
    expect(errorKey(refused(6379))).toBe('ECONNREFUSED:connect ECONNREFUSED 127.0.0.1:6379');
    expect(errorKey(refused(6380))).not.toBe(errorKey(refused(6379)));
    const retrying = (ms: number) => new Error(`All sentinels are unreachable. Retrying from scratch after ${ms}ms. Last error: x`);
    expect(errorKey(retrying(20))).toBe(errorKey(retrying(1_000)));
    expect(errorKey(retrying(20))).toBe(':All sentinels are unreachable. Retrying from scratch after #ms. Last error: x');
    expect(errorKey(new Error('gave up after 3 attempts in 2.5 s'))).toBe(errorKey(new Error('gave up after 4 attempts in 3 s')));
    expect(errorKey(new Error('Connection is closed.'))).not.toBe(errorKey(new Error('Command timed out')));
  });
});
