import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { segmentsBodySchema, seriesResponseSchema } from '@tally/contracts';
import { createLogger } from '@tally/observability';
import { openApi31Errors } from '@tally/testing';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture, view } from '../test/fixture';

const f = useFixture();
let key: string;
let dist: string;

beforeAll(async () => {
  key = (await f.tenant('SHOP_H')).read;
  await f.apply('SHOP_H', 'UTC', [view('2024-03-15T10:00:00Z', 'P1', 'V1')]);
  await f.flush('SHOP_H');
  dist = mkdtempSync(join(tmpdir(), 'tally-dashboard-'));
  writeFileSync(
    join(dist, 'index.html'),
    '<!doctype html><title>Tally dashboard</title><script type="module" src="/assets/app.js"></script>',
  );
  mkdirSync(join(dist, 'assets'));
  writeFileSync(join(dist, 'assets', 'app.js'), 'console.log("tally");');
});
afterAll(async () => {
  rmSync(dist, { recursive: true, force: true });
});

describe('OpenAPI docs', () => {
  it('serves the document generated from the zod schemas at /docs/json and the UI at /docs', async () => {
    const app = await f.app();
    const json = await app.inject({ method: 'GET', url: '/docs/json' });
    expect(json.statusCode).toBe(200);
    const doc = json.json();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths).sort()).toEqual(['/v1/segments/evaluate', '/v1/series', '/v1/store', '/v1/top', '/v1/totals']);
    const series = doc.paths['/v1/series'].get;
    const granularity = series.parameters.find((p: { name: string }) => p.name === 'granularity');
    expect(granularity).toMatchObject({ in: 'query', required: false, schema: { enum: ['day', 'month', 'year', 'total'] } });
    expect(series.parameters.map((p: { name: string }) => p.name).sort()).toEqual([
      'entity',
      'from',
      'granularity',
      'metrics',
      'range',
      'store',
      'to',
    ]);
    expect(Object.keys(series.responses).sort()).toEqual(['200', '400', '401', '403', '404', '413', '429', '500', '503']);
    const body = doc.paths['/v1/segments/evaluate'].post.requestBody.content['application/json'].schema;
    expect(body.properties.segments.items.properties.rules.items.properties.op.enum).toEqual(['>=', '>', '=', '<=', '<', '!=']);
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });

    // A valid OpenAPI 3.1 document (and the validator does refuse a broken one), with operation ids and examples.
    expect(await openApi31Errors(doc)).toEqual([]);
    expect(await openApi31Errors({ ...doc, info: undefined })).not.toEqual([]);
    const ops = Object.values(
      doc.paths as Record<
        string,
        Record<string, { operationId?: string; responses: Record<string, { content?: Record<string, { example?: unknown }> }> }>
      >,
    ).flatMap((p) => Object.values(p));
    expect(ops.map((o) => o.operationId).sort()).toEqual(['evaluateSegments', 'getSeries', 'getStore', 'getTop', 'getTotals']);
    for (const o of ops) {
      expect(o.responses['200']!.content!['application/json']!.example).toBeDefined();
      expect(o.responses['400']!.content!['application/json']!.example).toMatchObject({ code: 'TALLY_ERR_BAD_REQUEST' });
    }
    expect(doc.paths['/v1/segments/evaluate'].post.requestBody.content['application/json'].example).toMatchObject({ visitor: 'V42' });
    // The examples are answers the contract accepts.
    expect(seriesResponseSchema.parse(series.responses['200'].content['application/json'].example)).toMatchObject({ entity: 'product:P1' });
    expect(
      segmentsBodySchema.parse(doc.paths['/v1/segments/evaluate'].post.requestBody.content['application/json'].example).segments,
    ).toHaveLength(2);

    const ui = await app.inject({ method: 'GET', url: '/docs' });
    expect([200, 302]).toContain(ui.statusCode);
    const page = ui.statusCode === 302 ? await app.inject({ method: 'GET', url: ui.headers.location as string }) : ui;
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('swagger');
  });
});

describe('dashboard at /', () => {
  it('answers a page saying how to build the dashboard when it is not built, naming no path of the server (the log does)', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const missing = join(dist, 'missing');
    const app = await f.app({ dashboardDir: missing, log: createLogger({ name: 'query-api-test', level: 'info', destination }) });
    const res = await app.inject({ method: 'GET', url: '/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.body).toContain('The dashboard is not built');
    expect(res.body).toContain('npx nx build dashboard');
    expect(res.body).toContain('DASHBOARD_DIR');
    // Anyone may fetch the page: the directory it looked in is for the operator, in the log.
    expect(res.body).not.toContain(dist);
    expect(res.body).not.toContain(tmpdir());
    const logged = lines.flatMap((l) => l.split('\n').filter(Boolean)).map((l) => JSON.parse(l) as { dashboardDir?: string });
    expect(logged).toContainEqual(expect.objectContaining({ dashboardDir: missing }));
  });

  it('serves the built files, deep links get index.html, API paths keep JSON 404s', async () => {
    const app = await f.app({ dashboardDir: dist });
    const index = await app.inject({ method: 'GET', url: '/' });
    expect(index.statusCode).toBe(200);
    expect(index.body).toContain('<title>Tally dashboard</title>');
    const asset = await app.inject({ method: 'GET', url: '/assets/app.js' });
    expect(asset.statusCode).toBe(200);
    expect(asset.headers['content-type']).toMatch(/javascript/);
    expect(asset.body).toBe('console.log("tally");');
    const deep = await app.inject({ method: 'GET', url: '/products/P1', headers: { accept: 'text/html,*/*' } });
    expect(deep.statusCode).toBe(200);
    expect(deep.body).toContain('<title>Tally dashboard</title>');
    const missingAsset = await app.inject({ method: 'GET', url: '/assets/nope.js' });
    expect(missingAsset.statusCode).toBe(404);
    const api = await app.inject({ method: 'GET', url: '/v1/nope', headers: { accept: 'text/html' } });
    expect(api.statusCode).toBe(404);
    expect(api.json()).toMatchObject({ code: 'TALLY_ERR_NOT_FOUND' });
    // The static files' catch-all is no route of an API path: a wrong method is still 405, an unknown path 404.
    const wrong = await app.inject({ method: 'GET', url: '/v1/segments/evaluate', headers: { accept: 'text/html' } });
    expect([wrong.statusCode, wrong.headers['allow'], wrong.json().code]).toEqual([405, 'POST', 'TALLY_ERR_METHOD_NOT_ALLOWED']);
    expect((await app.inject({ method: 'POST', url: '/v1/nope', payload: {} })).json()).toMatchObject({ code: 'TALLY_ERR_NOT_FOUND' });
    // The API keeps working beside the static files.
    const store = await app.inject({ method: 'GET', url: '/v1/store', headers: bearer(key) });
    expect(store.json()).toMatchObject({ store: 'SHOP_H' });
  });
  it('answers a path the static files refuse to look up 404 "no such file", never a file outside the dashboard', async () => {
    const app = await f.app({ dashboardDir: dist });
    const notFound = (path: string) => ({
      status: 404,
      body: { type: 'about:blank', title: 'Not Found', status: 404, code: 'TALLY_ERR_NOT_FOUND', detail: `no such file: ${path}` },
    });
    for (const url of ['//etc/passwd', '/index.html%00.js', '/assets/%5c..%5capp.js', '/assets//app.js', '//assets/app.js']) {
      const res = await app.inject({ method: 'GET', url });
      expect({ status: res.statusCode, body: res.json() }, url).toEqual(notFound(url));
    }
    // inject resolves dot segments; a raw request keeps them.
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const raw = await new Promise<string>((resolve, reject) => {
      let out = '';
      const client = connect(port, '127.0.0.1', () =>
        client.write('GET /assets/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
      );
      client.on('data', (d: Buffer) => (out += d.toString('utf8')));
      client.on('error', reject);
      client.on('close', () => resolve(out));
    });
    const [head, body] = raw.split('\r\n\r\n');
    expect(head!.split('\r\n')[0]).toBe('HTTP/1.1 404 Not Found');
    expect(JSON.parse(body!)).toEqual(notFound('/assets/../../etc/passwd').body);
  });
});

describe('ops routes and metrics', () => {
  it('serves /healthz, /readyz and /metrics with request durations and DynamoDB read units', async () => {
    const registry = new Registry();
    const app = await f.app({ registry });
    expect((await app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready' });
    const res = await app.inject({
      method: 'GET',
      url: '/v1/series?metrics=ViewCount&from=2024-03-01&to=2024-03-31',
      headers: bearer(key),
    });
    expect(res.json().totals).toEqual({ ViewCount: 1 });
    await app.inject({ method: 'GET', url: '/v1/series?granularity=week', headers: bearer(key) });
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(text).toMatch(/tally_http_request_duration_seconds_count\{route="\/v1\/series",method="GET",status_code="200"\} 1/);
    expect(text).toMatch(/tally_http_request_duration_seconds_count\{route="\/v1\/series",method="GET",status_code="400"\} 1/);
    expect(text).toMatch(/tally_dynamodb_requests_total\{operation="Query",outcome="ok"\} 1/);
    expect(text).toMatch(/tally_dynamodb_consumed_read_units_total\{operation="Query"\} [0-9.]+/);
    expect(text).toContain('tally_segment_cache_total{result="hit"} 0');
  });
});
