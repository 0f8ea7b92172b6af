import Fastify from 'fastify';
import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { closeHttp } from './index';

const agent = new Agent({ keepAlive: true });
afterEach(() => agent.destroy());

/** GET `path` on a keep-alive connection: the status and body, or the error that ended it. */
const get = (port: number, path: string) =>
  new Promise<{ status: number; body: string } | { error: string }>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', (err) => resolve({ error: err.message }));
    });
    req.on('error', (err) => resolve({ error: err.message }));
    req.end();
  });

async function slowApp(ms: number) {
  const app = Fastify();
  app.get('/slow', async () => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return 'done';
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, port: (app.server.address() as AddressInfo).port };
}

describe('closeHttp grace', () => {
  it('answers a request in flight, then returns without waiting out the grace on its keep-alive connection', async () => {
    const { app, port } = await slowApp(600);
    const answer = get(port, '/slow');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    await closeHttp(app, 5_000);
    const took = performance.now() - started;
    expect(await answer).toEqual({ status: 200, body: 'done' });
    expect(app.server.listening).toBe(false);
    expect(took).toBeGreaterThanOrEqual(400);
    expect(took).toBeLessThan(2_500);
  });

  it('cuts a request still running when the grace ends', async () => {
    const { app, port } = await slowApp(3_000);
    const answer = get(port, '/slow');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    await closeHttp(app, 400);
    const took = performance.now() - started;
    expect(await answer).toMatchObject({ error: expect.any(String) });
    expect(took).toBeGreaterThanOrEqual(350);
    expect(took).toBeLessThan(2_500);
  });
});
