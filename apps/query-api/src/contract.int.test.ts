import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { PROBLEM_SCHEMA } from '@tally/http';
import { createLogger } from '@tally/observability';
import type { LightMyRequestResponse } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture, view } from '../test/fixture';
import type { QueryApiApp } from './app';

// The query API's error contract: every 4xx and 5xx is an RFC 9457 problem (application/problem+json) with a
// TALLY_ERR_* code and the field at fault; plus what a hostile-input run found at this edge.

const NOW = Date.parse('2024-03-15T12:00:00Z');
const f = useFixture();
let app: QueryApiApp;
let keys: { read: string; ingest: string; both: string };
let closing = false;
const logged: string[] = [];
/** The query API's OpenAPI document (/docs/json): each answer's status and members must be named in it. */
let openapi: {
  paths: Record<
    string,
    Record<string, { responses: Record<string, { content: Record<string, { schema: { properties: object; required?: string[] } }> }> }>
  >;
};

beforeAll(async () => {
  keys = await f.tenant('SHOP_A');
  await f.tenant('SHOP_B');
  await f.apply('SHOP_A', 'UTC', [view('2024-03-15T10:00:00Z', 'P1', 'V1')]);
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logged.push(String(chunk));
      cb();
    },
  });
  app = await f.app({
    now: () => NOW,
    log: createLogger({ name: 'query-api-test', level: 'debug', destination }),
    isClosing: () => closing,
  });
  openapi = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
});

const get = (url: string, headers: Record<string, string> = bearer(keys.read)) => app.inject({ method: 'GET', url, headers });
const evaluate = (payload: string | Buffer, headers: Record<string, string> = {}) =>
  app.inject({
    method: 'POST',
    url: '/v1/segments/evaluate',
    headers: { ...bearer(keys.read), 'content-type': 'application/json', ...headers },
    payload,
  });

function expectProblem(r: LightMyRequestResponse, status: number, code: string, field?: string) {
  expect({ status: r.statusCode, type: r.headers['content-type'] }).toEqual({ status, type: 'application/problem+json; charset=utf-8' });
  const body = PROBLEM_SCHEMA.parse(r.json());
  expect(body).toMatchObject({ type: 'about:blank', status, code });
  if (field !== undefined) expect(body.field).toBe(field);
  // The operation asked (none for an unknown path or a method the path does not take) documents the status, and
  // names every member of the answer: the problem schema allows more members than it names.
  const { url = '', method = '' } = r.raw.req;
  const operation = openapi.paths[new URL(url, 'http://tally').pathname]?.[method.toLowerCase()];
  if (operation) {
    const schema = operation.responses[String(status)]?.content['application/json']?.schema;
    expect({ status, documented: schema !== undefined }).toEqual({ status, documented: true });
    expect(Object.keys(r.json()).filter((k) => !(k in schema!.properties))).toEqual([]);
    // And every member the document requires is there.
    expect((schema!.required ?? []).filter((k) => !(k in r.json()))).toEqual([]);
  }
  return body;
}

describe('every error is one problem format', () => {
  it('400 naming the field', async () => {
    expectProblem(await get('/v1/series?metrics=Bogus'), 400, 'TALLY_ERR_BAD_REQUEST', 'metrics');
    expectProblem(await get('/v1/series?nope=1'), 400, 'TALLY_ERR_BAD_REQUEST', 'nope');
    expectProblem(await evaluate('{"visitor":'), 400, 'TALLY_ERR_MALFORMED_BODY', 'body');
  });

  it('401, 403, 404', async () => {
    expectProblem(await get('/v1/series', {}), 401, 'TALLY_ERR_UNAUTHORIZED', 'authorization');
    expectProblem(await get('/v1/series', bearer(keys.ingest)), 403, 'TALLY_ERR_FORBIDDEN');
    expectProblem(await get('/v1/series?store=SHOP_B'), 404, 'TALLY_ERR_NOT_FOUND', 'store');
    expectProblem(await get('/v1/nothing'), 404, 'TALLY_ERR_NOT_FOUND');
  });

  it('405 with Allow for a known path asked with another method', async () => {
    const wrong = await get('/v1/segments/evaluate');
    expect(expectProblem(wrong, 405, 'TALLY_ERR_METHOD_NOT_ALLOWED').detail).toBe('/v1/segments/evaluate takes POST, not GET');
    expect(wrong.headers['allow']).toBe('POST');
    const post = await app.inject({ method: 'POST', url: '/v1/series', headers: bearer(keys.read), payload: {} });
    expect([expectProblem(post, 405, 'TALLY_ERR_METHOD_NOT_ALLOWED').status, post.headers['allow']]).toEqual([405, 'GET, HEAD']);
  });

  it('413 with its own name, however large the body', async () => {
    const body = expectProblem(await evaluate(Buffer.alloc(2 * 1024 * 1024, 0x20)), 413, 'TALLY_ERR_BODY_TOO_LARGE', 'body');
    expect(body).toMatchObject({ title: 'Payload Too Large', limit: 1_048_576 });
  });

  it('415 for a text/plain body and for an unknown Content-Encoding', async () => {
    expectProblem(
      await evaluate('{"visitor":"V1","segments":[]}', { 'content-type': 'text/plain' }),
      415,
      'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
      'content-type',
    );
    const enc = expectProblem(
      await evaluate('{}', { 'content-encoding': 'zstd-ish' }),
      415,
      'TALLY_ERR_UNSUPPORTED_ENCODING',
      'content-encoding',
    );
    expect(enc.detail).toMatch(/"zstd-ish"/);
  });

  it('a __proto__ key is reported as such, not as invalid JSON', async () => {
    const body = expectProblem(
      await evaluate('{"visitor":"V1","segments":[],"__proto__":{"x":1}}'),
      400,
      'TALLY_ERR_MALFORMED_BODY',
      'body',
    );
    expect(body.detail).toMatch(/"__proto__"/);
    expect(body.detail).not.toMatch(/not valid JSON/);
  });

  it('503 while closing, with Retry-After; probes still answer', async () => {
    closing = true;
    try {
      const r = await get('/v1/series');
      expectProblem(r, 503, 'TALLY_ERR_SHUTTING_DOWN');
      expect(r.headers['retry-after']).toBe('1');
      expect((await get('/healthz', {})).statusCode).toBe(200);
      expect((await get('/readyz', {})).statusCode).toBe(503);
    } finally {
      closing = false;
    }
  });
});

describe('edge', () => {
  it('takes a gzip body', async () => {
    const r = await evaluate(
      gzipSync(
        JSON.stringify({
          visitor: 'V1',
          segments: [{ name: 's', rules: [{ metric: 'ProductViews', key: 'P1', range: 'last3m', op: '>=', value: 1 }] }],
        }),
      ),
      {
        'content-encoding': 'gzip',
      },
    );
    expect(r.statusCode).toBe(200);
  });

  it('never logs a query string (a key in ?access_token= stays out of the log)', async () => {
    logged.length = 0;
    expect((await get('/v1/store?access_token=tly_leakedleakedleaked')).statusCode).toBe(400); // an unknown parameter
    expect((await get('/v1/nothing?access_token=tly_leakedleakedleaked')).statusCode).toBe(404);
    const lines = logged.join('');
    expect(lines).toMatch(/"path":"\/v1\/store"/);
    expect(lines).not.toContain('tly_leaked');
  });

  it('sends CSP, frame and nosniff headers with the dashboard and the API', async () => {
    for (const r of [await get('/', {}), await get('/v1/store')]) {
      expect(r.headers['content-security-policy']).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(r.headers['x-content-type-options']).toBe('nosniff');
    }
  });
});
