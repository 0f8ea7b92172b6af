import { describe, expect, it } from 'vitest';
import { createHttpApp, HttpProblem } from '@tally/http';
import { createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { z } from 'zod';
import { JSON_TYPE, NDJSON_TYPE, parseJsonArray, parseNdjson, registerEventParsers } from './body';
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

describe('registerEventParsers', () => {
  async function parsersApp() {
    const app = await createHttpApp({
      log: createLogger({ name: 'body-test', level: 'silent' }),
      registry: new Registry(),
      appName: 'collector',
      notFoundHint: 'events go to POST /v1/events',
      mediaTypes: [JSON_TYPE, NDJSON_TYPE],
      isClosing: () => false,
      ready: () => true,
    });
    registerEventParsers(app, { maxEvents: 10, maxBodyBytes: 4096 });
    // A body schema, as the real route has: a route without one ignores any body (libs/http edge).
    app.post('/v1/events', { schema: { body: z.unknown() } }, async (req) => req.body);
    return app;
  }
  type App = Awaited<ReturnType<typeof parsersApp>>;
  const post = (app: App, body: Buffer, contentType = JSON_TYPE) =>
    app.inject({ method: 'POST', url: '/v1/events', payload: body, headers: { 'content-type': contentType } });
  const page = (...bytes: number[]) =>
    Buffer.concat([Buffer.from('{"type":"page_view","dims":{"page":"/caf'), Buffer.from(bytes), Buffer.from('"}}')]);
  const array = (...events: Buffer[]) => Buffer.concat([Buffer.from('['), ...events, Buffer.from(']')]);
  const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

  it('refuses bytes that are not UTF-8 (400), which were read as U+FFFD and counted as one page', async () => {
    const app = await parsersApp();
    for (const bytes of [[0xe9], [0xe8], [0xff], [0xc3]]) {
      for (const [body, type] of [
        [array(page(...bytes)), JSON_TYPE],
        [Buffer.concat([page(0x21), Buffer.from('\n'), page(...bytes)]), NDJSON_TYPE],
      ] as const) {
        const r = await post(app, body, type);
        expect([r.statusCode, r.json().code, r.json().field]).toEqual([400, 'TALLY_ERR_MALFORMED_BODY', 'body']);
        expect(r.json().detail).toMatch(/^the body is not valid UTF-8: byte 0x[0-9a-f]{2} at offset \d+/);
      }
    }
    const ok = await post(app, array(page(0xc3, 0xa9)));
    expect([ok.statusCode, ok.json().items[0].dims.page]).toEqual([200, '/café']);
    await app.close();
  });

  it('answers a charset other than UTF-8 415, JSON and NDJSON', async () => {
    const app = await parsersApp();
    for (const type of [`${JSON_TYPE}; charset=iso-8859-1`, `${NDJSON_TYPE}; charset=ISO-8859-1`, `${JSON_TYPE}; charset=windows-1252`]) {
      const r = await post(app, type.startsWith(JSON_TYPE) ? array(page(0xe9)) : page(0xe9), type);
      expect([r.statusCode, r.json().code, r.json().field]).toEqual([415, 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE', 'content-type']);
      expect(r.json().detail).toMatch(/^charset "[^"]+" is not supported: send the body as UTF-8/);
    }
    for (const type of [`${JSON_TYPE}; charset=utf-8`, `${JSON_TYPE}; charset=UTF-8`])
      expect((await post(app, array(page(0xc3, 0xa9)), type)).json().items[0].dims.page).toBe('/café');
    await app.close();
  });

  it('drops one leading byte order mark, JSON and NDJSON', async () => {
    const app = await parsersApp();
    const json = await post(app, Buffer.concat([BOM, array(page(0x21))]));
    expect([json.statusCode, json.json().items]).toEqual([200, [{ type: 'page_view', dims: { page: '/caf!' } }]]);
    const nd = await post(app, Buffer.concat([BOM, page(0x21), Buffer.from('\n'), page(0x3f)]), NDJSON_TYPE);
    expect([nd.statusCode, nd.json().lineErrors, nd.json().items.length]).toEqual([200, [], 2]);
    // Only one: a second is not blank space in JSON.
    expect((await post(app, Buffer.concat([BOM, BOM, array(page(0x21))]))).json().detail).toMatch(/^the body is not valid JSON/);
    await app.close();
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
