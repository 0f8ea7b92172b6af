import { describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
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
});
