import Fastify from 'fastify';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { closeHttp } from './index';

describe('closeHttp', () => {
  it('cuts a connection whose client stopped reading, after the grace period', async () => {
    const app = Fastify();
    // A large response the client never reads keeps the connection busy (not idle).
    app.get('/big', async (_req, reply) => reply.type('text/plain').send('x'.repeat(20 * 1024 * 1024)));
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    await new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/big' }, (res) => {
        res.pause(); // never read
        resolve();
      });
      req.on('error', () => undefined);
      req.end();
    });
    // Without cutting the connection app.close() would wait for the client forever (the test would time out).
    await closeHttp(app, 300);
    expect(app.server.listening).toBe(false);
  });
});
