import { describe, expect, it } from 'vitest';
import { HttpProblem } from '@tally/http';
import { parseJsonArray, parseNdjson } from './body';
import { rejectReason } from './metrics';

const problemOf = (fn: () => unknown): HttpProblem => {
  try {
    fn();
  } catch (err) {
    if (err instanceof HttpProblem) return err;
    throw err;
  }
  throw new Error('no problem thrown');
};

describe('parseJsonArray', () => {
  it('takes an array and refuses everything else by name', () => {
    expect(parseJsonArray('[{"a":1},2]', 10).items).toEqual([{ a: 1 }, 2]);
    expect(problemOf(() => parseJsonArray('{"type":"view"}', 10)).message).toMatch(
      /^the body must be a JSON array of events, got an object/,
    );
    expect(problemOf(() => parseJsonArray('null', 10)).message).toMatch(/got null/);
    expect(problemOf(() => parseJsonArray('', 10)).message).toBe('the body is empty; send a JSON array of events');
    const bad = problemOf(() => parseJsonArray('[{"type":', 10));
    expect([bad.statusCode, bad.code]).toEqual([400, 'TALLY_ERR_MALFORMED_BODY']);
    expect(bad.message).toMatch(/^the body is not valid JSON: /);
  });

  it('refuses an array with no events: a batch must hold at least 1', () => {
    const p = problemOf(() => parseJsonArray('[]', 10));
    expect([p.statusCode, p.code, p.field]).toEqual([400, 'TALLY_ERR_MALFORMED_BODY', 'body']);
    expect(p.message).toBe('the batch is empty: it must hold at least 1 event');
  });

  it('refuses more events than the limit with 413 naming it', () => {
    const p = problemOf(() => parseJsonArray(JSON.stringify(Array(11).fill({})), 10));
    expect([p.statusCode, p.code, p.extra]).toEqual([413, 'TALLY_ERR_TOO_MANY_EVENTS', { limit: 10, count: 11 }]);
    expect(p.message).toMatch(/MAX_EVENTS_PER_REQUEST is 10/);
  });
});

describe('parseNdjson', () => {
  it('takes one event per line, skips blank lines and names lines that are not JSON', () => {
    const body = parseNdjson('{"a":1}\r\n\n  \n{"b":\n[3]\n', 10);
    expect(body.items).toEqual([{ a: 1 }, undefined, [3]]);
    expect(body.lineErrors).toHaveLength(1);
    expect(body.lineErrors[0]).toMatchObject({ index: 1, field: '(event)' });
    expect(body.lineErrors[0]!.reason).toMatch(/^line 4 is not valid JSON: /);
  });

  it('counts lines before parsing any', () => {
    expect(problemOf(() => parseNdjson('x\n'.repeat(11), 10)).statusCode).toBe(413);
    const none = problemOf(() => parseNdjson('\n\n', 10));
    expect([none.statusCode, none.code, none.field]).toEqual([400, 'TALLY_ERR_MALFORMED_BODY', 'body']);
    expect(none.message).toBe('the body is empty: a batch must hold at least 1 event, one JSON object per line');
  });
});

describe('rejectReason', () => {
  it('maps fields to a few labels', () => {
    expect(rejectReason('dims.anything-a-client-sends', 'x')).toBe('dims');
    expect(rejectReason('ts', 'x')).toBe('ts');
    expect(rejectReason('__proto__', 'unknown field')).toBe('event');
    expect(rejectReason('(event)', 'line 3 is not valid JSON: x')).toBe('json');
    expect(rejectReason('(event)', 'must be a JSON object')).toBe('event');
  });
});
