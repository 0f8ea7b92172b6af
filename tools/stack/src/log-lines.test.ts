import { describe, expect, it } from 'vitest';
import { formatBare, lineFormatter } from './log-lines';

const plain = lineFormatter({ color: false, nameWidth: 9 });
const at = new Date(2023, 4, 3, 10, 15, 0, 7);

describe('lineFormatter', () => {
  it('turns a pino line into source, time, level and message with its fields', () => {
    const line = JSON.stringify({
      level: 30,
      time: at.getTime(),
      pid: 1,
      hostname: 'h',
      name: 'collector',
      msg: 'flushed row',
      queue: 'dynamo-writes',
      rows: 3,
    });
    expect(plain.line('collector', line)).toBe('collector | [10:15:00.007] INFO: flushed row {"queue":"dynamo-writes","rows":3}');
  });

  it('prints error stacks below the line, each line with its source', () => {
    const line = JSON.stringify({
      level: 50,
      time: at.getTime(),
      msg: 'job failed',
      err: { type: 'Error', message: 'nope', stack: 'Error: nope\n    at x' },
    });
    const lines = lineFormatter({ color: false, nameWidth: 1 }).line('w', line).split('\n');
    expect(lines[0]).toBe('w | [10:15:00.007] ERROR: job failed');
    expect(lines.every((l) => l.startsWith('w | '))).toBe(true);
    expect(lines.some((l) => l.endsWith('Error: nope'))).toBe(true);
    expect(lines.some((l) => l.endsWith('at x'))).toBe(true);
  });

  it('reads redis-server lines as log records and keeps anything else verbatim', () => {
    expect(plain.line('redis', '10502:M 27 Nov 2026 15:47:19.991 * Ready to accept connections tcp')).toMatch(
      /^redis {5}\| \[\d\d:\d\d:\d\d\.\d{3}\] INFO: Ready to accept connections tcp$/,
    );
    expect(plain.line('redis', '10502:M 27 Nov 2026 15:47:19.991 # WARNING Memory overcommit must be enabled!')).toContain(
      'WARN: WARNING Memory',
    );
    expect(plain.line('redis', '10502:M 27 Nov 2026 15:47:19.991 . DB saved')).toContain('DEBUG: DB saved');
    expect(plain.line('redis', '10502:signal-handler (1795794460) Received SIGTERM scheduling shutdown...')).toMatch(
      /INFO: Received SIGTERM scheduling shutdown\.\.\.$/,
    );
    expect(plain.line('collector', '    at Object.<anonymous> (/x.ts:1:1)')).toBe('collector |     at Object.<anonymous> (/x.ts:1:1)');
    expect(plain.line('collector', '{not json}')).toBe('collector | {not json}');
  });

  it('says the stack’s own lines at their level, and colours only when asked', () => {
    expect(plain.say('stack', 'warn', 'slow')).toMatch(/^stack {5}\| \[[\d:.]+\] WARN: slow$/);
    expect(plain.say('stack', 'warn', 'slow')).not.toContain('\x1b[');
    expect(lineFormatter({ color: true, nameWidth: 1 }).say('a', 'warn', 'slow')).toContain('\x1b[33mWARN');
  });
});

describe('formatBare', () => {
  it('quotes a line without time and source', () => {
    expect(formatBare('SyntaxError: nope')).toBe('SyntaxError: nope');
    expect(formatBare(JSON.stringify({ level: 50, time: 1, msg: 'redis down', attempt: 2 }))).toBe('ERROR: redis down {"attempt":2}');
  });
});
