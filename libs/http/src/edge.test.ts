import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import fastifyStatic from '@fastify/static';
import { createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
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

  it('answers another 4xx with the code of its status, where there is one, and its headers (a 416 its Content-Range)', async () => {
    const { app } = await appWithLog();
    const dir = mkdtempSync(join(tmpdir(), 'tally-edge-'));
    writeFileSync(join(dir, 'a.txt'), '0123456789');
    await app.register(fastifyStatic, { root: dir, prefix: '/files/' });
    app.get('/conflict', async () => {
      throw Object.assign(new Error('the thing changed meanwhile'), { statusCode: 409 });
    });
    app.get('/teapot', async () => {
      throw Object.assign(new Error("I'm a Teapot"), { statusCode: 418 });
    });
    const answer = async (url: string, headers: Record<string, string> = {}) => {
      const r = await app.inject({ method: 'GET', url, headers });
      return { ...r.json(), contentRange: r.headers['content-range'] };
    };
    expect(await answer('/files/a.txt', { range: 'bytes=999999-' })).toEqual({
      type: 'about:blank',
      title: 'Range Not Satisfiable',
      status: 416,
      code: 'TALLY_ERR_BAD_REQUEST',
      detail: 'Range Not Satisfiable',
      contentRange: 'bytes */10',
    });
    expect(await answer('/files/a.txt?v=1', { 'if-match': '"x"' })).toMatchObject({ status: 412, code: 'TALLY_ERR_BAD_REQUEST' });
    expect(await answer('/conflict')).toMatchObject({ status: 409, code: 'TALLY_ERR_CONFLICT', detail: 'the thing changed meanwhile' });
    // No code of its own: TALLY_ERR_BAD_REQUEST.
    expect(await answer('/teapot')).toMatchObject({ status: 418, code: 'TALLY_ERR_BAD_REQUEST', detail: "I'm a Teapot" });
    await app.close();
    rmSync(dir, { recursive: true });
  });

  it('answers a query parameter given twice where one is expected "is given twice", a body array "must be a string"', async () => {
    const { app } = await appWithLog();
    const schema = { querystring: z.object({ q: z.string().optional(), kind: z.enum(['a', 'b']).optional() }) };
    app.get('/search', { schema }, async () => ({}));
    app.post('/things', { schema: { body: z.object({ q: z.string() }) } }, async () => ({}));
    const detail = async (url: string) => (await app.inject({ method: 'GET', url })).json().detail;
    expect(await detail('/search?q=x&q=x')).toBe('q: is given twice; give it once');
    expect(await detail('/search?kind=a&kind=b&kind=a')).toBe('kind: is given 3 times; give it once');
    const body = await app.inject({ method: 'POST', url: '/things', payload: { q: ['x', 'x'] } });
    expect(body.json()).toMatchObject({ status: 400, field: 'q', detail: 'q: must be a string, got an array' });
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

  it('answers /readyz while not ready 503 in the problem format, with Retry-After', async () => {
    const app = await createHttpApp({
      log: createLogger({ name: 'edge-test', level: 'silent' }),
      registry: new Registry(),
      appName: 'test app',
      notFoundHint: 'see /docs',
      mediaTypes: ['application/json'],
      isClosing: () => false,
      ready: () => false,
    });
    const r = await app.inject({ method: 'GET', url: '/readyz' });
    expect([r.statusCode, r.headers['content-type'], r.headers['retry-after'], r.headers['cache-control']]).toEqual([
      503,
      'application/problem+json; charset=utf-8',
      '1',
      'no-store',
    ]);
    expect(r.json()).toEqual({
      type: 'about:blank',
      title: 'Service Unavailable',
      status: 503,
      code: 'TALLY_ERR_UNAVAILABLE',
      detail: 'not ready: the process cannot do its work now (see its log)',
    });
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

describe('request bodies', () => {
  const LIMIT = 4096;
  async function bodyApp() {
    const app = await createHttpApp({
      log: createLogger({ name: 'edge-test', level: 'silent' }),
      registry: new Registry(),
      bodyLimit: LIMIT,
      bodyLimitName: 'MAX_BODY_BYTES',
      appName: 'test app',
      notFoundHint: 'see /docs',
      mediaTypes: ['application/json'],
      isClosing: () => false,
      ready: () => true,
    });
    app.post('/things', { schema: { body: z.object({ page: z.string() }) } }, async (req) => req.body);
    return app;
  }
  const post = (app: Awaited<ReturnType<typeof bodyApp>>, payload: Buffer | string | Readable, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/things', payload, headers: { 'content-type': 'application/json', ...headers } });
  /** `{"page":"/caf` + bytes + `"}` */
  const withBytes = (...bytes: number[]) => Buffer.concat([Buffer.from('{"page":"/caf'), Buffer.from(bytes), Buffer.from('"}')]);

  it('refuses a body that is not valid UTF-8 (400), where its bytes were read as U+FFFD', async () => {
    const app = await bodyApp();
    for (const bytes of [[0xe9], [0xe8], [0xff], [0xc3], [0xed, 0xa0, 0x80]]) {
      const r = await post(app, withBytes(...bytes));
      expect([r.statusCode, r.json().code, r.json().field]).toEqual([400, 'TALLY_ERR_MALFORMED_BODY', 'body']);
      expect(r.json().detail).toMatch(new RegExp(`^the body is not valid UTF-8: byte 0x${bytes[0]!.toString(16)} at offset 13`));
    }
    const ok = await post(app, withBytes(0xc3, 0xa9));
    expect([ok.statusCode, ok.json()]).toEqual([200, { page: '/café' }]);
    await app.close();
  });

  it('takes UTF-8 with or without a charset, and answers another charset 415', async () => {
    const app = await bodyApp();
    for (const type of [
      'application/json; charset=utf-8',
      'application/json;charset=UTF-8',
      'application/json; charset="utf-8"',
      'application/json; charset=utf8',
    ])
      expect((await post(app, withBytes(0xc3, 0xa9), { 'content-type': type })).json()).toEqual({ page: '/café' });
    for (const charset of ['iso-8859-1', 'ISO-8859-1', 'utf-16', 'us-ascii']) {
      const r = await post(app, withBytes(0xe9), { 'content-type': `application/json; charset=${charset}` });
      expect([r.statusCode, r.json().code, r.json().field]).toEqual([415, 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE', 'content-type']);
      expect(r.json().detail).toBe(`charset ${JSON.stringify(charset)} is not supported: send the body as UTF-8 (charset=utf-8, or none)`);
    }
    await app.close();
  });

  it('takes a JSON body that starts with a byte order mark', async () => {
    const app = await bodyApp();
    const r = await post(app, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"page":"/a"}')]));
    expect([r.statusCode, r.json()]).toEqual([200, { page: '/a' }]);
    await app.close();
  });

  it('takes a Content-Encoding in any case', async () => {
    const app = await bodyApp();
    for (const encoding of ['gzip', 'GZIP', 'Gzip'])
      expect((await post(app, gzipSync('{"page":"/a"}'), { 'content-encoding': encoding })).json()).toEqual({ page: '/a' });
    expect((await post(app, brotliCompressSync('{"page":"/a"}'), { 'content-encoding': 'BR' })).json()).toEqual({ page: '/a' });
    expect((await post(app, '{"page":"/a"}', { 'content-encoding': 'Deflate' })).json()).toMatchObject({
      status: 415,
      code: 'TALLY_ERR_UNSUPPORTED_ENCODING',
    });
    await app.close();
  });

  it('counts a compressed body as sent: one over the limit is 413 before it is read in full, however little it holds', async () => {
    const app = await bodyApp();
    const EMPTY_MEMBER = gzipSync(Buffer.alloc(0));
    const expectCompressedTooLarge = (r: Awaited<ReturnType<typeof post>>) => {
      expect([r.statusCode, r.json().code, r.json().field, r.json().limit]).toEqual([413, 'TALLY_ERR_BODY_TOO_LARGE', 'body', LIMIT]);
      expect(r.json().detail).toBe(
        `the compressed request body is larger than MAX_BODY_BYTES (${LIMIT} bytes), the limit of a compressed body too: split it into smaller requests`,
      );
    };
    // With a Content-Length: refused before any byte is read.
    const padded = Buffer.concat([...Array(1_000).fill(EMPTY_MEMBER), gzipSync('{"page":"/a"}')]);
    expectCompressedTooLarge(await post(app, padded, { 'content-encoding': 'gzip' }));
    // Chunked, empty gzip members without end: refused once the limit is passed, not read to the end.
    let sent = 0;
    const endless = new Readable({
      read() {
        if (sent > 64 * 1024 * 1024) return this.push(null);
        sent += 64 * EMPTY_MEMBER.length;
        this.push(Buffer.concat(Array(64).fill(EMPTY_MEMBER)));
      },
    });
    expectCompressedTooLarge(await post(app, endless, { 'content-encoding': 'gzip' }));
    expect(sent).toBeLessThan(LIMIT + 256 * 1024);
    // A body within the limit as sent that passes it once decompressed is still refused, as such.
    const bomb = await post(app, gzipSync(`{"page":"/${'a'.repeat(LIMIT)}"}`), { 'content-encoding': 'gzip' });
    expect([bomb.statusCode, bomb.json().detail]).toEqual([
      413,
      `the request body is larger than MAX_BODY_BYTES (${LIMIT} bytes) once decompressed: split it into smaller requests`,
    ]);
    await app.close();
  });

  it('ignores a body sent to a route that takes none, unread: its Content-Type and Content-Encoding refuse nothing', async () => {
    const app = await bodyApp();
    app.delete('/things/:id', async (req) => ({ deleted: (req.params as { id: string }).id, body: req.body ?? null }));
    app.get('/things', async (req) => ({ body: req.body ?? null }));
    const answer = async (method: 'DELETE' | 'GET', url: string, headers: Record<string, string>, payload?: Buffer | string) => {
      const r = await app.inject({ method, url, headers, ...(payload !== undefined && { payload }) });
      return [r.statusCode, r.json()];
    };
    const deleted = [200, { deleted: 'T1', body: null }];
    expect(await answer('DELETE', '/things/T1', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' })).toEqual(
      deleted,
    );
    expect(await answer('DELETE', '/things/T1', { 'content-type': 'text/plain' }, 'x')).toEqual(deleted);
    expect(await answer('DELETE', '/things/T1', { 'content-type': 'application/json' }, '{"page":"/a"}')).toEqual(deleted);
    expect(await answer('DELETE', '/things/T1', { 'content-type': 'application/json' }, ' '.repeat(LIMIT))).toEqual(deleted);
    expect(await answer('DELETE', '/things/T1', { 'content-encoding': 'gzip', 'content-type': 'application/json' }, 'not gzip')).toEqual(
      deleted,
    );
    expect(await answer('GET', '/things', { 'content-encoding': 'zstd' })).toEqual([200, { body: null }]);
    // A route that takes a body still refuses one it cannot read.
    expect((await post(app, '{"page":"/a"}', { 'content-type': 'text/plain' })).statusCode).toBe(415);

    // Over a connection kept alive, the ignored body is discarded: the next request on it is answered as such.
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const out = await new Promise<string>((resolve, reject) => {
      let text = '';
      const client = connect(port, '127.0.0.1', () =>
        client.write(
          'DELETE /things/T2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nGET /nope\r\n\r\n' +
            'GET /things HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nGET /nope\r\n\r\n\r\n0\r\n\r\n' +
            'GET /things HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        ),
      );
      client.on('data', (d: Buffer) => (text += d.toString('utf8')));
      client.on('error', reject);
      client.on('close', () => resolve(text));
    });
    expect(out.match(/HTTP\/1\.1 \d+|\{"(deleted|body)"[^}]*\}/g)).toEqual([
      'HTTP/1.1 200',
      '{"deleted":"T2","body":null}',
      'HTTP/1.1 200',
      '{"body":null}',
      'HTTP/1.1 200',
      '{"body":null}',
    ]);
    await app.close();
  });

  it('refuses a body over the limit sent to a route that takes none 413 at once, and closes the connection unread', async () => {
    const app = await bodyApp();
    app.delete('/things/:id', async () => ({ deleted: true }));
    app.get('/things', async () => ({ ok: true }));
    const tooLarge = (method: string, route: string) => ({
      type: 'about:blank',
      title: 'Payload Too Large',
      status: 413,
      code: 'TALLY_ERR_BODY_TOO_LARGE',
      detail: `${method} ${route} takes no body, and this one is larger than MAX_BODY_BYTES (${LIMIT} bytes): send none`,
      field: 'body',
      limit: LIMIT,
    });
    const r = await app.inject({ method: 'DELETE', url: '/things/T1', payload: ' '.repeat(LIMIT + 1) });
    expect([r.statusCode, r.headers['content-type'], r.headers['connection'], r.json()]).toEqual([
      413,
      'application/problem+json; charset=utf-8',
      'close',
      tooLarge('DELETE', '/things/:id'),
    ]);
    // A chunked body, which declares no size: counted as it comes, refused once past the limit, not read to its end.
    let sent = 0;
    const endless = new Readable({
      read() {
        if (sent > 64 * 1024 * 1024) return this.push(null);
        sent += 16 * 1024;
        this.push(Buffer.alloc(16 * 1024, 0x20));
      },
    });
    const chunked = await app.inject({ method: 'GET', url: '/things', payload: endless, headers: { 'transfer-encoding': 'chunked' } });
    expect([chunked.statusCode, chunked.json()]).toEqual([413, tooLarge('GET', '/things')]);
    expect(sent).toBeLessThan(LIMIT + 256 * 1024);

    // Over a connection: answered with the first bytes of the body, the rest never sent, and the connection closed.
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const raw = (head: string, body: string) =>
      new Promise<{ status: string; connection?: string; body: unknown }>((resolve, reject) => {
        let out = '';
        const client = connect(port, '127.0.0.1', () => client.write(head + body));
        client.on('data', (d: Buffer) => (out += d.toString('utf8')));
        client.on('error', reject);
        client.on('close', () => {
          const [headLines = '', text = ''] = out.split('\r\n\r\n');
          const lines = headLines.split('\r\n');
          const connection = lines.find((l) => l.toLowerCase().startsWith('connection:'))?.replace(/^[^:]*:\s*/, '');
          resolve({ status: lines[0]!, connection, body: JSON.parse(text) });
        });
      });
    expect(
      await raw('DELETE /things/T1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100000000\r\n\r\n', ' '.repeat(1024)),
    ).toEqual({ status: 'HTTP/1.1 413 Payload Too Large', connection: 'close', body: tooLarge('DELETE', '/things/:id') });
    const chunk = `400\r\n${' '.repeat(1024)}\r\n`;
    expect(await raw('GET /things HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunk.repeat(8))).toEqual({
      status: 'HTTP/1.1 413 Payload Too Large',
      connection: 'close',
      body: tooLarge('GET', '/things'),
    });
    await app.close();
  });

  it('leaves no body unread on a kept-alive connection: one over the limit to a route that takes none is 413 before any hook', async () => {
    // Before this, the 413 was the edge's preParsing, which a request refused by an onRequest hook (the query API's key
    // check, its rate limit) never reached: Node read and dropped the whole body after the 401.
    const app = await bodyApp();
    const refuse = async () => {
      throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'no key');
    };
    app.get('/open', async () => ({ ok: true }));
    await app.register(async (scope) => {
      scope.addHook('onRequest', refuse);
      scope.get('/secret', async () => ({ ok: true }));
      scope.post('/secret', { schema: { body: z.object({ page: z.string() }) } }, async (req) => req.body);
    });
    app.get('/also-secret', { onRequest: refuse }, async () => ({ ok: true }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const MAX = 200 * 1024 * 1024;
    /** Sends `head`, then `piece` over and over up to MAX bytes: the answer's status and Connection, and the bytes sent. */
    const send = (head: string, piece: string) =>
      new Promise<{ status?: string; connection?: string; unread: boolean }>((resolve) => {
        let out = '';
        let written = 0;
        const done = () => {
          const lines = out.split('\r\n\r\n')[0]!.split('\r\n');
          const connection = lines.find((l) => l.toLowerCase().startsWith('connection:'))?.replace(/^[^:]*:\s*/, '');
          // The connection closed after the answer, before much of the body was sent (socket buffers take a few MB).
          resolve({ status: lines[0]?.split(' ').slice(0, 2).join(' '), connection, unread: written < MAX / 4 });
        };
        const client = connect(port, '127.0.0.1', async () => {
          client.write(head);
          while (written < MAX && !client.destroyed) {
            if (!client.write(piece)) await new Promise((r) => client.once('drain', r).once('close', r));
            written += piece.length;
          }
          client.destroy();
        });
        client.on('data', (d: Buffer) => (out += d.toString('utf8')));
        client.on('error', () => {});
        client.on('close', done);
      });
    const spaces = ' '.repeat(64 * 1024);
    const chunk = `${(64 * 1024).toString(16)}\r\n${spaces}\r\n`;
    const declared = (method: string, path: string) =>
      send(`${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${MAX}\r\n\r\n`, spaces);
    const chunked = (method: string, path: string) =>
      send(`${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`, chunk);
    const closed = (status: string) => ({ status, connection: 'close', unread: true });

    // Declared over the limit, to a route that takes none: 413 before the scope's or the route's own hook.
    expect(await declared('GET', '/open')).toEqual(closed('HTTP/1.1 413'));
    expect(await declared('GET', '/secret')).toEqual(closed('HTTP/1.1 413'));
    expect(await declared('GET', '/also-secret')).toEqual(closed('HTTP/1.1 413'));
    // Refused by a hook before its body is read: answered, and the connection closed rather than the body read on.
    expect(await declared('POST', '/secret')).toEqual(closed('HTTP/1.1 401'));
    expect(await chunked('POST', '/secret')).toEqual(closed('HTTP/1.1 401'));
    expect(await chunked('GET', '/secret')).toEqual(closed('HTTP/1.1 401'));
    // An unknown route, or one asked with another method: its 404 or 405, the body unread.
    expect(await declared('GET', '/nope')).toEqual(closed('HTTP/1.1 404'));
    expect(await chunked('GET', '/nope')).toEqual(closed('HTTP/1.1 404'));
    expect(await declared('DELETE', '/open')).toEqual(closed('HTTP/1.1 405'));

    // A body within the limit is read (or dropped) as before: the connection stays open for the next request.
    const answers = await new Promise<string[]>((resolve, reject) => {
      let out = '';
      const client = connect(port, '127.0.0.1', () =>
        client.write(
          'GET /secret HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
            'GET /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
            'GET /open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        ),
      );
      client.on('data', (d: Buffer) => (out += d.toString('utf8')));
      client.on('error', reject);
      client.on('close', () => resolve(out.match(/HTTP\/1\.1 \d+/g) ?? []));
    });
    expect(answers).toEqual(['HTTP/1.1 401', 'HTTP/1.1 404', 'HTTP/1.1 200']);
    await app.close();
  }, 60_000);

  it('answers Expect: 100-continue with 100 only for a body it will read: one declared over the limit is 413 without it', async () => {
    // Node answered 100 Continue at once, before the edge could refuse a body declared over the limit: the client then
    // sent it, to be refused 413 anyway.
    const app = await bodyApp();
    app.delete('/things/:id', async () => ({ deleted: true }));
    await app.register(async (scope) => {
      scope.addHook('onRequest', async () => {
        throw new HttpProblem(401, 'TALLY_ERR_UNAUTHORIZED', 'no key');
      });
      scope.post('/secret', { schema: { body: z.object({ page: z.string() }) } }, async (req) => req.body);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    /**
     * Sends `head` with Expect: 100-continue, and `body` only once a 100 comes (as curl and Node's client do): every
     * status line answered on the connection, and the last answer's Content-Type, Connection and body.
     */
    const expecting = (head: string, body: string) =>
      new Promise<{ statuses: string[]; type?: string; connection?: string; body: unknown }>((resolve, reject) => {
        let out = '';
        let sent = false;
        const client = connect(port, '127.0.0.1', () => client.write(`${head}Expect: 100-continue\r\n\r\n`));
        client.on('data', (d: Buffer) => {
          out += d.toString('utf8');
          if (!sent && out.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
            sent = true;
            client.write(body);
          }
          // The final answer in full: a client that got its answer closes (the server may keep the connection open).
          const final = out.slice(out.lastIndexOf('HTTP/1.1 '));
          const [finalHead = '', text = ''] = final.split('\r\n\r\n');
          const length = /\r\ncontent-length: (\d+)/i.exec(finalHead)?.[1];
          if (!final.startsWith('HTTP/1.1 100') && length !== undefined && Buffer.byteLength(text) >= Number(length)) client.end();
        });
        client.on('error', reject);
        client.on('close', () => {
          const statuses = out.match(/HTTP\/1\.1 \d+ [^\r]*/g) ?? [];
          const [finalHead = '', text = ''] = out.slice(out.lastIndexOf('HTTP/1.1 ')).split('\r\n\r\n');
          const lines = finalHead.split('\r\n');
          const header = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.replace(/^[^:]*:\s*/, '');
          resolve({ statuses, type: header('content-type'), connection: header('connection'), body: JSON.parse(text) });
        });
      });
    const problem = {
      type: 'application/problem+json; charset=utf-8',
      connection: 'close',
      body: expect.objectContaining({ status: 413, code: 'TALLY_ERR_BODY_TOO_LARGE', field: 'body', limit: LIMIT }),
    };

    // Declared over the limit, to a route that takes a body or to one that takes none: the 413 alone, no 100.
    const over = ' '.repeat(LIMIT + 1);
    const post = (path: string, length: number) =>
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n`;
    expect(await expecting(post('/things', over.length), over)).toEqual({ statuses: ['HTTP/1.1 413 Payload Too Large'], ...problem });
    expect(await expecting(`${post('/things', over.length)}Content-Encoding: gzip\r\n`, over)).toEqual({
      statuses: ['HTTP/1.1 413 Payload Too Large'],
      ...problem,
    });
    expect(await expecting(`DELETE /things/T1 HTTP/1.1\r\nHost: x\r\nContent-Length: ${over.length}\r\n`, over)).toEqual({
      statuses: ['HTTP/1.1 413 Payload Too Large'],
      ...problem,
    });
    // Refused before its body would be read (a key check, a rate limit, an unknown route): its answer alone, no 100.
    const body = JSON.stringify({ page: '/home' });
    // The connection is closed after it, so that a body sent anyway is not read as the next request.
    const answered = async (head: string) => {
      const { statuses, connection } = await expecting(head, body);
      return { statuses, connection };
    };
    expect(await answered(post('/secret', body.length))).toEqual({ statuses: ['HTTP/1.1 401 Unauthorized'], connection: 'close' });
    expect(await answered(post('/nope', body.length))).toEqual({ statuses: ['HTTP/1.1 404 Not Found'], connection: 'close' });
    // Within the limit: 100, then the body is read and answered as without Expect.
    expect(await expecting(post('/things', body.length), body)).toEqual({
      statuses: ['HTTP/1.1 100 Continue', 'HTTP/1.1 200 OK'],
      type: 'application/json; charset=utf-8',
      connection: 'keep-alive',
      body: { page: '/home' },
    });
    await app.close();
  });

  it('stops decompressing a body refused once past the limit: its decompressor is destroyed with the 413, not left inflating', async () => {
    const limit = 64 * 1024;
    const app = await createHttpApp({
      log: createLogger({ name: 'edge-test', level: 'silent' }),
      registry: new Registry(),
      bodyLimit: limit,
      appName: 'test app',
      notFoundHint: 'see /docs',
      mediaTypes: ['application/json'],
      isClosing: () => false,
      ready: () => true,
    });
    /** The decompressors the body parser read (one per request), with the bytes each produced in all. */
    const seen: Array<{ stream: Readable; inflated: number }> = [];
    app.post(
      '/things',
      {
        schema: { body: z.object({ page: z.string() }) },
        // After @fastify/compress's preParsing: `payload` is its decompressor. Its 'data' events are counted without a
        // listener of our own, which would change how it flows once the body parser leaves it.
        preParsing: (_req, _reply, payload, done) => {
          const entry = { stream: payload as Readable, inflated: 0 };
          const emit = payload.emit.bind(payload);
          payload.emit = (event: string | symbol, ...args: unknown[]) => {
            if (event === 'data') entry.inflated += (args[0] as Buffer).length;
            return emit(event, ...args);
          };
          seen.push(entry);
          done(null, payload);
        },
      },
      async () => ({ ok: true }),
    );
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    // 32 gzip members of 1 MiB of zeros: ~32 KB as sent (within the limit), 32 MiB once decompressed.
    const bomb = Buffer.concat(Array.from({ length: 32 }, () => gzipSync(Buffer.alloc(1024 * 1024))));
    expect(bomb.length).toBeLessThan(limit);
    /** POSTs the bomb over HTTP; resolves with the status once the connection is closed. */
    const postBomb = () =>
      new Promise<number>((resolve, reject) => {
        let status = 0;
        const headers = { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': bomb.length };
        const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/things', agent: false, headers }, (res) => {
          status = res.statusCode!;
          res.resume();
        });
        req.on('error', reject);
        req.on('close', () => resolve(status));
        req.end(bomb);
      });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push(await postBomb());
    // Each decompressor is done one way or the other (destroyed, or read to its end as before the fix).
    for (let i = 0; i < 250 && seen.some((e) => !e.stream.destroyed && !e.stream.readableEnded); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(statuses).toEqual([413, 413, 413, 413, 413]);
    expect(seen.map((e) => ({ destroyed: e.stream.destroyed, inflatedPastTwiceTheLimit: e.inflated > 2 * limit }))).toEqual(
      Array(5).fill({ destroyed: true, inflatedPastTwiceTheLimit: false }),
    );
    await app.close();
  });
});
