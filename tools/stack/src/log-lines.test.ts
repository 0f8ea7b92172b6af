import { describe, expect, it } from 'vitest';
import { formatBare, formatLine, LineTail, parseLine } from './log-lines';

const plain = { color: false, nameWidth: 9 };
const at = new Date(2023, 4, 3, 10, 15, 0, 7);

describe('formatLine', () => {
  it('turns a pino line into time, level, app and message with its fields', () => {
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
    expect(formatLine('collector', line, plain)).toBe('10:15:00.007 INFO  collector | flushed row queue=dynamo-writes rows=3');
  });

  it('quotes values with spaces and prints error stacks below the line', () => {
    const line = JSON.stringify({
      level: 50,
      time: at.getTime(),
      msg: 'job failed',
      reason: 'two words',
      err: { type: 'Error', message: 'nope', stack: 'Error: nope\n    at x' },
    });
    expect(formatLine('w', line, { color: false, nameWidth: 1 }).split('\n')).toEqual([
      '10:15:00.007 ERROR w | job failed reason="two words" err=nope',
      '                     | Error: nope',
      '                     |     at x',
    ]);
  });

  it('keeps redis-server lines readable and anything else verbatim', () => {
    expect(formatLine('redis', '10502:M 27 Nov 2026 15:47:19.991 * Ready to accept connections tcp', plain, at)).toBe(
      '10:15:00.007 INFO  redis     | Ready to accept connections tcp',
    );
    expect(formatLine('redis', '10502:M 27 Nov 2026 15:47:19.991 # WARNING Memory overcommit must be enabled!', plain, at)).toContain(
      'WARN  redis     | WARNING Memory',
    );
    expect(formatLine('redis', '10502:signal-handler (1795794460) Received SIGTERM scheduling shutdown...', plain, at)).toBe(
      '10:15:00.007 INFO  redis     | Received SIGTERM scheduling shutdown...',
    );
    expect(formatLine('collector', '    at Object.<anonymous> (/x.ts:1:1)', plain, at)).toBe(
      '10:15:00.007       collector |     at Object.<anonymous> (/x.ts:1:1)',
    );
    expect(formatLine('collector', '{not json}', plain, at)).toBe('10:15:00.007       collector | {not json}');
  });

  it('colours only when asked', () => {
    const line = JSON.stringify({ level: 40, time: at.getTime(), msg: 'slow' });
    expect(formatLine('a', line, plain)).not.toContain('\x1b[');
    expect(formatLine('a', line, { color: true, nameWidth: 1 })).toContain('\x1b[33mWARN');
  });
});

describe('parseLine', () => {
  it('accepts pino label levels and ISO times', () => {
    const p = parseLine(JSON.stringify({ level: 'debug', time: '2023-05-03T10:15:00.000Z', msg: 'x' }));
    expect(p.level).toBe('debug');
    expect(p.time.toISOString()).toBe('2023-05-03T10:15:00.000Z');
  });
});

describe('LineTail', () => {
  it('keeps the last lines only', () => {
    const t = new LineTail(2);
    for (const l of ['a', 'b', 'c']) t.push(l);
    expect(t.lines()).toEqual(['b', 'c']);
  });
});

describe('formatBare', () => {
  it('quotes a line without time and source', () => {
    expect(formatBare('SyntaxError: nope')).toBe('SyntaxError: nope');
    expect(formatBare(JSON.stringify({ level: 50, time: 1, msg: 'redis down', attempt: 2 }))).toBe('ERROR redis down attempt=2');
  });
});
