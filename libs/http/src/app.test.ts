import { connect, type AddressInfo, type Socket } from 'node:net';
import { createLogger } from '@tally/observability';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createHttpApp } from './index';

const testApp = (registry = new Registry()) =>
  createHttpApp({
    log: createLogger({ name: 'app-test', level: 'silent' }),
    registry,
    appName: 'test app',
    notFoundHint: 'see /docs',
    mediaTypes: ['application/json'],
    isClosing: () => false,
    ready: () => true,
  });

describe('createHttpApp', () => {
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
});
