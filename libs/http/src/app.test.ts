import { once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { closeHttp, createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createHttpApp } from './index';

const testApp = (registry = new Registry(), isClosing = () => false) =>
  createHttpApp({
    log: createLogger({ name: 'app-test', level: 'silent' }),
    registry,
    appName: 'test app',
    notFoundHint: 'see /docs',
    mediaTypes: ['application/json'],
    isClosing,
    ready: () => true,
  });

/** The head lines and body of the second answer on a connection. */
function secondAnswer(out: string): { status: string; header: (name: string) => string | undefined; body: unknown } {
  const second = out.slice(out.indexOf('HTTP/1.1', 1));
  const [head, body] = second.split('\r\n\r\n');
  const lines = head!.split('\r\n');
  const header = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.split(': ')[1];
  return { status: lines[0]!, header, body: JSON.parse(body!) };
}

/**
 * Sends a request that waits in its handler, begins the app's shutdown (`begin`), then sends a second request on the
 * same kept-alive connection once the server no longer listens; resolves with everything answered on the connection.
 */
async function requestWhileClosing(begin: (app: Awaited<ReturnType<typeof testApp>>) => Promise<void>, flag: { closing: boolean }) {
  const app = await testApp(new Registry(), () => flag.closing);
  let entered!: () => void;
  const inHandler = new Promise<void>((r) => (entered = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  app.get('/slow', async () => {
    entered();
    await released;
    return { ok: true };
  });
  app.get('/things', async () => ({ ok: true }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  const socket = connect(port, '127.0.0.1');
  let out = '';
  socket.on('data', (d: Buffer) => (out += d.toString('utf8')));
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await inHandler;
  const shutdown = begin(app);
  // Closing has begun once the server stops listening (Fastify closes its routes first, in the same step).
  while (app.server.listening) await new Promise((r) => setImmediate(r));
  const routed = once(app.server, 'request');
  socket.write('GET /things HTTP/1.1\r\nHost: x\r\n\r\n');
  await routed;
  release();
  await closed;
  await shutdown;
  return out;
}

describe('createHttpApp', () => {
  it('answers a request on a kept-alive connection during shutdown 503 TALLY_ERR_SHUTTING_DOWN with Retry-After', async () => {
    const expected = {
      status: 'HTTP/1.1 503 Service Unavailable',
      type: 'application/problem+json; charset=utf-8',
      retryAfter: '1',
      connection: 'close',
      body: { type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'TALLY_ERR_SHUTTING_DOWN' },
    };
    const shape = (out: string) => {
      const a = secondAnswer(out);
      const [type, retryAfter, connection] = ['content-type', 'retry-after', 'connection'].map(a.header);
      return { status: a.status, type, retryAfter, connection, body: a.body };
    };
    // As both apps' main.ts shut down: the closing flag, then closeHttp.
    const flag = { closing: false };
    const flagged = await requestWhileClosing(async (app) => {
      flag.closing = true;
      await closeHttp(app);
    }, flag);
    expect(shape(flagged)).toMatchObject(expected);
    // app.close() alone, the flag never set: the same answer.
    expect(shape(await requestWhileClosing(async (app) => void (await app.close()), { closing: false }))).toMatchObject(expected);
  });

  it("answers what the HTTP parser refuses as a problem on the socket, not Fastify's JSON: 431, 400, 408", async () => {
    const registry = new Registry();
    const app = await testApp(registry);
    app.get('/ok', async () => ({ ok: true }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    // The whole answer, up to the server closing the connection.
    const raw = (request: string, onConnected?: (client: Socket) => void) =>
      new Promise<{ head: string[]; body: Record<string, unknown> }>((resolve, reject) => {
        let out = '';
        const client = connect(port, '127.0.0.1', () => (onConnected ? onConnected(client) : client.write(request)));
        client.on('data', (d: Buffer) => (out += d.toString('utf8')));
        client.on('error', reject);
        client.on('close', () => {
          const [head, body] = out.split('\r\n\r\n');
          resolve({ head: head!.split('\r\n'), body: JSON.parse(body!) });
        });
      });
    const problem = (status: number, title: string, code: string, detail: string, field?: string) => ({
      head: expect.arrayContaining([
        `HTTP/1.1 ${status} ${title}`,
        'Content-Type: application/problem+json; charset=utf-8',
        'Connection: close',
      ]),
      body: { type: 'about:blank', title, status, code, detail, ...(field && { field }) },
    });

    // A header block over Node's 16 KiB: a long Idempotency-Key, or a long URL.
    const tooLarge = problem(
      431,
      'Request Header Fields Too Large',
      'TALLY_ERR_HEADERS_TOO_LARGE',
      'the request line and headers are larger than 16384 bytes in all: shorten the URL or the headers',
      'headers',
    );
    expect(await raw(`GET /ok HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${'k'.repeat(20_000)}\r\n\r\n`)).toEqual(tooLarge);
    expect(await raw(`GET /ok?q=${'k'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`)).toEqual(tooLarge);
    // A raw character outside ASCII in the URL, not percent-encoded.
    expect(await raw('GET /ok?from=\uff12\uff10\uff12\uff16-01-01 HTTP/1.1\r\nHost: x\r\n\r\n')).toEqual(
      problem(
        400,
        'Bad Request',
        'TALLY_ERR_BAD_REQUEST',
        'the URL is not valid (Invalid char in url query): percent-encode every character that is not visible ASCII, e.g. ２ as %EF%BC%92',
        'url',
      ),
    );
    expect(await raw('GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n')).toEqual(
      problem(400, 'Bad Request', 'TALLY_ERR_BAD_REQUEST', 'the request is not valid HTTP/1.1 (Invalid character in Content-Length)'),
    );
    // Node checks requestTimeout every second (so the 408 comes within 31 s, not 60): its error is handed to the server
    // as Node hands it.
    const server = app.server as typeof app.server & { connectionsCheckingInterval: number };
    expect([server.requestTimeout, server.connectionsCheckingInterval]).toEqual([30_000, 1_000]);
    const serverSide = new Promise<Socket>((resolve) => app.server.once('connection', resolve));
    const timedOut = raw('', () => {
      void serverSide.then((socket) =>
        app.server.emit('clientError', Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket),
      );
    });
    expect(await timedOut).toEqual(
      problem(408, 'Request Timeout', 'TALLY_ERR_REQUEST_TIMEOUT', 'the request did not arrive in full within 30 s'),
    );
    // A request that is well formed is answered as before on a new connection.
    expect((await fetch(`http://127.0.0.1:${port}/ok`)).status).toBe(200);
    // Counted, as the duration histogram (which has no route for them) cannot.
    const unparsed = (await registry.getSingleMetric('tally_http_unparsed_requests_total')!.get()).values;
    expect(Object.fromEntries(unparsed.map((v) => [v.labels.status_code, v.value]))).toEqual({ 400: 2, 408: 1, 431: 2 });
    await app.close();
  });

  it('answers an HTTP/1.1 request without Host 400 and an Expect other than 100-continue 417, as problems', async () => {
    const registry = new Registry();
    const app = await testApp(registry);
    app.post('/things', async () => ({ ok: true }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    /** The status line, the headers asked for and the body, once the server closed the connection. */
    const raw = (request: string) =>
      new Promise<{ status: string; type?: string; connection?: string; body: string }>((resolve, reject) => {
        let out = '';
        const client = connect(port, '127.0.0.1', () => client.write(request));
        client.on('data', (d: Buffer) => (out += d.toString('utf8')));
        client.on('error', reject);
        client.on('close', () => {
          const [head = '', ...rest] = out.split('\r\n\r\n');
          const lines = head.split('\r\n');
          const header = (name: string) => lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.replace(/^[^:]*:\s*/, '');
          resolve({ status: lines[0]!, type: header('content-type'), connection: header('connection'), body: rest.join('\r\n\r\n') });
        });
      });
    const problem = (status: number, title: string, detail: string, field: string) => ({
      status: `HTTP/1.1 ${status} ${title}`,
      type: 'application/problem+json; charset=utf-8',
      connection: 'close',
      body: JSON.stringify({ type: 'about:blank', title, status, code: 'TALLY_ERR_BAD_REQUEST', detail, field }),
    });

    expect(await raw('GET /healthz HTTP/1.1\r\n\r\n')).toEqual(
      problem(400, 'Bad Request', 'an HTTP/1.1 request needs a Host header', 'host'),
    );
    const body = '[]';
    expect(
      await raw(
        `POST /things HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      ),
    ).toEqual(
      problem(417, 'Expectation Failed', 'Expect: "200-ok" is not supported; send no Expect header, or Expect: 100-continue', 'expect'),
    );
    // HTTP/1.0 needs no Host.
    expect((await raw('GET /healthz HTTP/1.0\r\n\r\n')).status).toBe('HTTP/1.1 200 OK');
    // The 417 before routing in the unparsed count, the 400 in the duration histogram of its route.
    const unparsed = (await registry.getSingleMetric('tally_http_unparsed_requests_total')!.get()).values;
    expect(unparsed.map((v) => [v.labels.status_code, v.value])).toEqual([['417', 1]]);
    expect(await registry.metrics()).toMatch(
      /tally_http_request_duration_seconds_count\{route="\/healthz",method="GET",status_code="400"\} 1/,
    );
    await app.close();
  });
});
