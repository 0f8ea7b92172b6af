import { fastify } from 'fastify';
import { Writable } from 'node:stream';
import { Registry, Counter } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, registerOpsRoutes, startOpsServer, type OpsServer } from './index';

function registry(): Registry {
  const r = new Registry();
  r.setDefaultLabels({ app: 'test' });
  new Counter({ name: 'tally_things_total', help: 'things', registers: [r] }).inc(2);
  return r;
}

const apps: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

function appWith(ready: () => boolean | Promise<boolean>, readyTimeoutMs?: number) {
  const app = fastify();
  apps.push(app);
  registerOpsRoutes(app, { registry: registry(), ready, ...(readyTimeoutMs ? { readyTimeoutMs } : {}) });
  return app;
}

describe('registerOpsRoutes', () => {
  it('GET /healthz is 200 {status: ok}', async () => {
    const res = await appWith(() => false).inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });

  it('GET /readyz follows the ready check', async () => {
    let ready = false;
    const app = appWith(async () => ready);
    let res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json()).toEqual({
      type: 'about:blank',
      title: 'Service Unavailable',
      status: 503,
      code: 'TALLY_ERR_UNAVAILABLE',
      detail: 'not ready: the process cannot do its work now (see its log)',
    });
    ready = true;
    res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ready' });
  });

  it('GET /readyz is 503 when the check throws or hangs', async () => {
    const throwing = await appWith(() => {
      throw new Error('redis down');
    }).inject({ method: 'GET', url: '/readyz' });
    expect(throwing.statusCode).toBe(503);
    const started = Date.now();
    const hanging = await appWith(() => new Promise<boolean>(() => {}), 100).inject({ method: 'GET', url: '/readyz' });
    expect(hanging.statusCode).toBe(503);
    expect(hanging.json()).toMatchObject({ status: 503, code: 'TALLY_ERR_UNAVAILABLE' });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("GET /readyz's 503 is the app's own error when it gives one", async () => {
    const app = fastify();
    apps.push(app);
    registerOpsRoutes(app, {
      registry: registry(),
      ready: () => false,
      unavailable: (detail) => Object.assign(new Error(detail), { statusCode: 503 }),
    });
    app.setErrorHandler((err: Error, _req, reply) => reply.code(503).send({ mine: err.message }));
    const res = await app.inject({ method: 'GET', url: '/readyz' });
    expect([res.statusCode, res.json(), res.headers['cache-control']]).toEqual([
      503,
      { mine: 'not ready: the process cannot do its work now (see its log)' },
      'no-store',
    ]);
  });

  it('GET /metrics is Prometheus text from the registry', async () => {
    const res = await appWith(() => true).inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(res.body).toContain('# TYPE tally_things_total counter\ntally_things_total{app="test"} 2\n');
  });

  it('GET /metrics asks for the bearer token when one is set; the probes stay open', async () => {
    const app = fastify();
    apps.push(app);
    const token = 'a'.repeat(20) + 'Z';
    registerOpsRoutes(app, { registry: registry(), ready: () => true, metricsToken: token });
    for (const authorization of [undefined, 'Bearer wrong-token-of-some-length', `Basic ${token}`, `Bearer ${token}x`]) {
      const res = await app.inject({ method: 'GET', url: '/metrics', headers: authorization ? { authorization } : {} });
      expect(res.statusCode, authorization).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer');
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.json()).toMatchObject({ status: 401, code: 'TALLY_ERR_UNAUTHORIZED', detail: expect.stringContaining('METRICS_TOKEN') });
      expect(res.body).not.toContain('tally_things_total');
    }
    const ok = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `bearer ${token}` } });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toContain('tally_things_total{app="test"} 2');
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
  });

  it('mounts beside an app’s own routes', async () => {
    const app = appWith(() => true);
    app.post('/v1/events', async () => ({ accepted: 1 }));
    expect((await app.inject({ method: 'POST', url: '/v1/events' })).json()).toEqual({ accepted: 1 });
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

describe('startOpsServer', () => {
  it('serves the three routes on a real port and closes', async () => {
    const logged: string[] = [];
    const sink = new Writable({
      write: (c, _e, cb) => {
        logged.push(String(c));
        cb();
      },
    });
    const log = createLogger({ name: 'worker', destination: sink });
    let ready = true;
    const server: OpsServer = await startOpsServer({ host: '127.0.0.1', port: 0, registry: registry(), ready: () => ready, log });
    apps.push(server);
    expect(server.port).toBeGreaterThan(0);
    const base = `http://127.0.0.1:${server.port}`;

    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    ready = false;
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(await metrics.text()).toContain('tally_things_total{app="test"} 2');
    // Probes come every few seconds: they must not log a line each.
    expect(logged.join('')).not.toMatch(/\/healthz|\/readyz|\/metrics/);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect(logged.join('')).toMatch(/"url":"\/nope"/);

    await server.close();
    apps.pop();
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
