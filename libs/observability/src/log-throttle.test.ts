import { describe, expect, it } from 'vitest';
import { throttleLog } from './log-throttle';

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
