import { Writable } from 'node:stream';
import { createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createHttpApp, HttpProblem, problemBody, unavailable, visitorRef } from './index';

async function appWithLog(opts: { logRequests?: boolean; level?: 'info' | 'debug'; metricsToken?: string } = {}) {
  const lines: Array<Record<string, any>> = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  const registry = new Registry();
  const app = await createHttpApp({
    log: createLogger({ name: 'edge-test', destination, ...(opts.level && { level: opts.level }) }),
    registry,
    logRequests: opts.logRequests,
    metricsToken: opts.metricsToken,
    appName: 'test app',
    notFoundHint: 'see /docs',
    mediaTypes: ['application/json'],
    isClosing: () => false,
    ready: () => true,
  });
  app.get('/boom', async () => {
    throw new TypeError('a bug');
  });
  app.get('/down', async () => {
    throw unavailable('the key store is unavailable; retry later', 5, new Error('connect ECONNREFUSED'));
  });
  return { app, lines, registry };
}

describe('problemBody', () => {
  it('is RFC 9457 with the code, the field and extension members', () => {
    const p = new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', 'from: must be YYYY-MM-DD', { field: 'from', extra: { limit: 3 } });
    expect(problemBody(p)).toEqual({
      type: 'about:blank',
      title: 'Bad Request',
      status: 400,
      code: 'TALLY_ERR_BAD_REQUEST',
      detail: 'from: must be YYYY-MM-DD',
      field: 'from',
      limit: 3,
    });
  });
});

describe('the edge', () => {
  it('logs a request line at info for an error answer only: a dashboard polling every few seconds fills no log', async () => {
    const { app, lines } = await appWithLog({ logRequests: true });
    app.get('/ok', async () => ({ ok: true }));
    app.delete('/v1/visitors/:visitor', async () => {
      throw new HttpProblem(404, 'TALLY_ERR_NOT_FOUND', 'nothing stored for this visitor');
    });
    for (let i = 0; i < 20; i++) await app.inject({ method: 'GET', url: '/ok?k=secret' });
    await app.inject({ method: 'GET', url: '/nothing?k=secret' });
    expect(lines.filter((l) => l['msg'] === 'request').map((l) => [l['level'], l['route'], l['path'], l['statusCode']])).toEqual([
      [30, 'unmatched', '/nothing', 404],
    ]);
    // A visitor id in the path is logged as its hash prefix: an erasure's 404 or 503 keeps no id in clear.
    await app.inject({ method: 'DELETE', url: '/v1/visitors/V%2042?x=1' });
    const erase = lines.find((l) => l['msg'] === 'request' && l['route'] === '/v1/visitors/:visitor');
    expect(erase?.['path']).toBe(`/v1/visitors/${visitorRef('V 42')}`);
    expect(JSON.stringify(lines)).not.toContain('V 42');
    expect(JSON.stringify(lines)).not.toContain('V%2042');
    // At debug every request has its line.
    const debug = await appWithLog({ logRequests: true, level: 'debug' });
    debug.app.get('/ok', async () => ({ ok: true }));
    await debug.app.inject({ method: 'GET', url: '/ok' });
    expect(debug.lines.filter((l) => l['msg'] === 'request').map((l) => [l['level'], l['statusCode']])).toEqual([[20, 200]]);
  });

  it('logs a stack trace only for an unexpected error, and a flood of expected 503s as one line', async () => {
    const { app, lines } = await appWithLog();
    const boom = await app.inject({ method: 'GET', url: '/boom' });
    expect(boom.json()).toMatchObject({ status: 500, code: 'TALLY_ERR_INTERNAL', detail: 'internal error; see the test app log' });
    for (let i = 0; i < 200; i++) expect((await app.inject({ method: 'GET', url: '/down' })).headers['retry-after']).toBe('5');
    for (let i = 0; i < 200; i++) await app.inject({ method: 'GET', url: `/random-${i}?k=${i}` });
    const warnOrWorse = lines.filter((l) => l['level'] >= 40);
    expect(warnOrWorse.map((l) => [l['level'], l['msg'], typeof l['err']?.stack])).toEqual([
      [50, 'request failed', 'string'],
      [40, 'the key store is unavailable; retry later', 'undefined'],
    ]);
    expect(warnOrWorse[1]).toMatchObject({ code: 'TALLY_ERR_UNAVAILABLE', cause: 'connect ECONNREFUSED' });
    await app.close();
  });

  it('answers a known path asked with another method 405 with Allow, an unknown path or a catch-all 404', async () => {
    const { app } = await appWithLog();
    app.post('/v1/things/:id', async () => ({}));
    app.get('/files/*', async () => ({}));
    const wrong = await app.inject({ method: 'GET', url: '/v1/things/T1?k=x' });
    expect([wrong.statusCode, wrong.headers['allow'], wrong.headers['content-type']]).toEqual([
      405,
      'POST',
      'application/problem+json; charset=utf-8',
    ]);
    expect(wrong.json()).toEqual({
      type: 'about:blank',
      title: 'Method Not Allowed',
      status: 405,
      code: 'TALLY_ERR_METHOD_NOT_ALLOWED',
      detail: '/v1/things/T1 takes POST, not GET',
    });
    const probe = await app.inject({ method: 'DELETE', url: '/healthz' });
    expect([probe.statusCode, probe.headers['allow']]).toEqual([405, 'GET, HEAD']);
    for (const url of ['/v1/things', '/v1/things/T1/more', '/files/a.txt'])
      expect((await app.inject({ method: 'PUT', url })).json()).toMatchObject({ status: 404, code: 'TALLY_ERR_NOT_FOUND' });
    await app.close();
  });

  it('answers a URL the router cannot decode 400 in the problem format', async () => {
    const { app } = await appWithLog();
    app.get('/v1/things/:id', async () => ({}));
    const bad = await app.inject({ method: 'GET', url: '/v1/things/%E0%A4%A' });
    expect([bad.statusCode, bad.headers['content-type']]).toEqual([400, 'application/problem+json; charset=utf-8']);
    expect(bad.json()).toMatchObject({ status: 400, code: 'TALLY_ERR_BAD_REQUEST', field: 'url' });
    await app.close();
  });

  it('answers /metrics without METRICS_TOKEN 401 in the problem format, and with it the Prometheus text', async () => {
    const token = 'metrics-token-0123456789';
    const { app } = await appWithLog({ metricsToken: token });
    const denied = await app.inject({ method: 'GET', url: '/metrics' });
    expect([denied.statusCode, denied.headers['content-type']]).toEqual([401, 'application/problem+json; charset=utf-8']);
    expect(denied.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(denied.json()).toMatchObject({ status: 401, code: 'TALLY_ERR_UNAUTHORIZED', field: 'authorization' });
    const ok = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toContain('tally_http_request_duration_seconds');
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    await app.close();
  });

  it('times every request by route template', async () => {
    const { app, registry } = await appWithLog();
    await app.inject({ method: 'GET', url: '/healthz' });
    await app.inject({ method: 'GET', url: '/nope' });
    const text = await registry.metrics();
    expect(text).toMatch(/tally_http_request_duration_seconds_count\{route="\/healthz",method="GET",status_code="200"\} 1/);
    expect(text).toMatch(/tally_http_request_duration_seconds_count\{route="unmatched",method="GET",status_code="404"\} 1/);
    await app.close();
  });
});
