import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { PROBLEM_SCHEMA } from '@tally/http';
import type { RedisConnection } from '@tally/queues';
import { createTenantDirectory } from '@tally/tenants';
import { metricValue, openApi31Errors, sleep, startRedisCluster } from '@tally/testing';
import type { LightMyRequestResponse } from 'fastify';
import { Cluster, Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture } from '../test/fixture';
import type { QueryApiApp } from './app';

// Each store's request rate limit on the /v1 read routes (QUERY_RATE_LIMIT_PER_SECOND), counted in the Redis the
// replicas share, and the budget of key lookups for keys not cached (UNKNOWN_KEY_LOOKUPS_PER_SECOND).

const f = useFixture();
let keys: { read: string; ingest: string; both: string };
let other: { read: string };
let prefixes = 0;

beforeAll(async () => {
  keys = await f.tenant('SHOP_R');
  other = await f.tenant('SHOP_S');
});

/**
 * An app of its own registry whose read routes allow `perSecond × windowSeconds` requests per store and window,
 * counted in `redis` under `prefix` (the limit's clock `now`, if given); keys stay cached, so that a request takes
 * milliseconds.
 */
function limitedApp(opts: { perSecond: number; windowSeconds: number; prefix: string; redis?: RedisConnection; now?: () => number }) {
  const registry = new Registry();
  const app = f.app({
    registry,
    directory: createTenantDirectory({ dynamo: f.client, table: f.table, cacheTtlMs: 60_000 }),
    rateLimit: {
      redis: opts.redis ?? f.redis,
      keyPrefix: opts.prefix,
      perSecond: opts.perSecond,
      windowSeconds: opts.windowSeconds,
      now: opts.now,
    },
  });
  return app.then((a) => Object.assign(a, { registry }));
}

/** A connection of its own whose script calls (the rate limit's EVALSHA or EVAL) are counted. */
function countingConnection() {
  const counted = f.redis.duplicate();
  let calls = 0;
  const send = counted.sendCommand.bind(counted);
  const isScript = (cmd: unknown) => ['evalsha', 'eval'].includes((cmd as { name: string }).name);
  counted.sendCommand = ((...args: Parameters<typeof send>) => (isScript(args[0]) && calls++, send(...args))) as typeof send;
  return { counted, calls: () => calls };
}
const nextPrefix = () => `rl${++prefixes}`;
const counterKey = (prefix: string, store: string) => `${prefix}:query-rate:{${store}}`;
const store = (app: QueryApiApp, key: string) => app.inject({ method: 'GET', url: '/v1/store', headers: bearer(key) });
const app401 = (app: QueryApiApp) => app.inject({ method: 'GET', url: '/v1/store' });
const told = (r: LightMyRequestResponse) => ({
  status: r.statusCode,
  limit: r.headers['x-ratelimit-limit'],
  remaining: r.headers['x-ratelimit-remaining'],
  reset: r.headers['x-ratelimit-reset'],
});

function expectRateLimited(r: LightMyRequestResponse, windowSeconds: number) {
  expect({ status: r.statusCode, type: r.headers['content-type'] }).toEqual({
    status: 429,
    type: 'application/problem+json; charset=utf-8',
  });
  const body = PROBLEM_SCHEMA.parse(r.json());
  expect(body).toMatchObject({ type: 'about:blank', title: 'Too Many Requests', status: 429, code: 'TALLY_ERR_RATE_LIMITED' });
  expect(body.detail).toMatch(/^store "SHOP_R" is over its rate limit of .* requests per second .*QUERY_RATE_LIMIT_PER_SECOND/);
  const retryAfter = Number(r.headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= windowSeconds).toBe(true);
  return body;
}

describe("a store's request rate limit", () => {
  it('holds across two app instances sharing Redis, over every key of the store, and not for other stores', async () => {
    const prefix = nextPrefix();
    // 0.1 per second over windows of 60 s: 6 requests per window, for the store, whichever instance and key.
    const [a, b] = [
      await limitedApp({ perSecond: 0.1, windowSeconds: 60, prefix }),
      await limitedApp({ perSecond: 0.1, windowSeconds: 60, prefix }),
    ];
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await store(i % 2 ? b : a, i % 3 ? keys.read : keys.both)).statusCode);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);

    const refused = await store(b, keys.read);
    expect(expectRateLimited(refused, 60)).toMatchObject({ requestsPerSecond: 0.1, windowSeconds: 60 });
    expectRateLimited(await a.inject({ method: 'GET', url: '/v1/series', headers: bearer(keys.both) }), 60);
    // Refused before its body is read: a malformed body is not even looked at.
    const evaluate = await a.inject({
      method: 'POST',
      url: '/v1/segments/evaluate',
      headers: { ...bearer(keys.read), 'content-type': 'application/json' },
      payload: '{"visitor":',
    });
    expectRateLimited(evaluate, 60);
    // Another store has a budget of its own.
    expect((await store(a, other.read)).statusCode).toBe(200);

    // Counted by route on the instance that refused; the OpenAPI document names the answer and its members.
    expect(metricValue(await b.registry.metrics(), 'tally_http_rate_limited_total', { route: '/v1/store' })).toBe(1);
    expect(metricValue(await a.registry.metrics(), 'tally_http_rate_limited_total', { route: '/v1/series' })).toBe(1);
    expect(metricValue(await a.registry.metrics(), 'tally_http_rate_limited_total', { route: '/v1/segments/evaluate' })).toBe(1);
    const doc = (await a.inject({ method: 'GET', url: '/docs/json' })).json();
    for (const [path, method] of [
      ['/v1/store', 'get'],
      ['/v1/series', 'get'],
      ['/v1/totals', 'get'],
      ['/v1/top', 'get'],
      ['/v1/segments/evaluate', 'post'],
    ] as const) {
      const schema = doc.paths[path][method].responses['429'].content['application/json'].schema;
      expect(Object.keys(refused.json()).filter((k) => !(k in schema.properties))).toEqual([]);
    }
  });

  it('tells every answer it counts the limit, over all replicas: X-RateLimit-Limit, -Remaining and -Reset, in the OpenAPI too', async () => {
    const prefix = nextPrefix();
    // 1/30 per second over windows of 60 s: 2 per window.
    const [a, b] = [
      await limitedApp({ perSecond: 1 / 30, windowSeconds: 60, prefix }),
      await limitedApp({ perSecond: 1 / 30, windowSeconds: 60, prefix }),
    ];
    // The first answer of a window tells its whole length; the second one, from the other replica, the store's count.
    const first = told(await store(a, keys.read));
    expect(first).toEqual({ status: 200, limit: '2', remaining: '1', reset: '60' });
    const second = told(await store(b, keys.both));
    expect(second).toEqual({ status: 200, limit: '2', remaining: '0', reset: expect.stringMatching(/^(59|60)$/) });
    const refused = await store(a, keys.read);
    expectRateLimited(refused, 60);
    // The 429 too: its reset is its Retry-After.
    expect(told(refused)).toEqual({ status: 429, limit: '2', remaining: '0', reset: refused.headers['retry-after'] });
    // Not on a request the limit does not count (no valid key), nor on routes it does not limit.
    const unlimited = [await app401(a), await a.inject({ method: 'GET', url: '/healthz' })];
    expect(unlimited.map((r) => Object.keys(r.headers).filter((h) => h.startsWith('x-ratelimit')))).toEqual([[], []]);

    // The OpenAPI document names them on the answers of every limited route, and stays valid OpenAPI 3.1.
    const doc = (await a.inject({ method: 'GET', url: '/docs/json' })).json();
    expect(await openApi31Errors(doc)).toEqual([]);
    for (const [path, method] of [
      ['/v1/store', 'get'],
      ['/v1/series', 'get'],
      ['/v1/totals', 'get'],
      ['/v1/top', 'get'],
      ['/v1/segments/evaluate', 'post'],
    ] as const) {
      for (const status of ['200', '429']) {
        const headers = doc.paths[path][method].responses[status].headers ?? {};
        expect([
          path,
          status,
          Object.keys(headers)
            .filter((h) => h.startsWith('x-ratelimit'))
            .sort(),
        ]).toEqual([path, status, ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']]);
        expect(headers['x-ratelimit-limit']).toMatchObject({ description: expect.any(String), schema: { type: 'integer' } });
        // The 429 names its Retry-After too.
        expect([path, status, headers['retry-after']?.schema]).toEqual([
          path,
          status,
          status === '429' ? { type: 'integer', minimum: 1 } : undefined,
        ]);
      }
    }
  });

  it('tells X-RateLimit-Remaining over every replica: a replica that passed none of the window lately catches up within an eighth of it', async () => {
    const prefix = nextPrefix();
    // Replica a's clock (monotonic ms): moved by the test, as the limit's staleness bound is a share of the window.
    const clock = { now: 1_000 };
    // 16 per second over windows of 40 s: 640 a window; a lease is at most 640 / 64 = 10.
    const a = await limitedApp({ perSecond: 16, windowSeconds: 40, prefix, now: () => clock.now });
    const b = await limitedApp({ perSecond: 16, windowSeconds: 40, prefix });
    expect(told(await store(a, keys.read))).toMatchObject({ status: 200, limit: '640', remaining: '639' });
    // The other replica takes the rest of the store's window (its 640 less a's lease of 10), until it refuses.
    let passed = 0;
    for (;;) {
      const r = await store(b, keys.both);
      if (r.statusCode !== 200) {
        expect(told(r)).toMatchObject({ status: 429, limit: '640', remaining: '0' });
        break;
      }
      passed++;
    }
    expect(passed).toBe(630);
    // An eighth of the window later, a's next answer (from its lease, without waiting for Redis) has the count read
    // again; once that read is back (the same connection answers in order), a's answers count b's requests: the store
    // may still make only what a leased and has not used.
    clock.now += 5_000;
    expect((await store(a, keys.read)).statusCode).toBe(200);
    await f.redis.ping();
    expect(told(await store(a, keys.read))).toMatchObject({ status: 200, limit: '640', remaining: '7' });
    expect(told(await store(a, keys.read))).toMatchObject({ status: 200, limit: '640', remaining: '6' });
    // What passes is unchanged (the leases'): a's 6 left, then the 429.
    for (let i = 0; i < 6; i++) expect((await store(a, keys.read)).statusCode).toBe(200);
    expect(told(await store(a, keys.read))).toMatchObject({ status: 429, remaining: '0' });
  });

  it('tells what is left of the window Redis counts once it ended there first, not the count of the window before it', async () => {
    const prefix = nextPrefix();
    const clock = { now: 1_000 };
    // 1 per second over windows of 60 s: 60 a window, leases of 1 (60 / 64 < 1): every request is a lease call.
    const a = await limitedApp({ perSecond: 1, windowSeconds: 60, prefix, now: () => clock.now });
    for (let i = 0; i < 49; i++) expect((await store(a, keys.read)).statusCode).toBe(200);
    expect(told(await store(a, keys.read))).toEqual({ status: 200, limit: '60', remaining: '10', reset: '60' });
    expect(await f.redis.get(counterKey(prefix, 'SHOP_R'))).toBe('50');

    // The window ends in Redis while the replica's clock is still before its lease's end (as when Redis loses the key,
    // or its clock runs ahead of the replica's): the replica's clock does not move.
    await f.redis.pexpire(counterKey(prefix, 'SHOP_R'), 1);
    while ((await f.redis.exists(counterKey(prefix, 'SHOP_R'))) === 1) await sleep(5);

    // The next request's lease call opens the next window in Redis (its count 1, its TTL the whole window): the
    // answer tells what the store has left of it, 59, not 60 less the previous window's 50.
    expect(told(await store(a, keys.read))).toEqual({ status: 200, limit: '60', remaining: '59', reset: '60' });
    expect(await f.redis.get(counterKey(prefix, 'SHOP_R'))).toBe('1');

    // And so for the rest of that window, a read of the count included.
    clock.now += 30_000;
    for (let i = 0; i < 4; i++) expect((await store(a, keys.read)).statusCode).toBe(200);
    await f.redis.ping();
    expect(told(await store(a, keys.read))).toMatchObject({ status: 200, remaining: '54' });
    expect(await f.redis.get(counterKey(prefix, 'SHOP_R'))).toBe('6');
  });

  it('counts no request without a valid key, and never limits /healthz, /readyz, /metrics or /docs', async () => {
    const prefix = nextPrefix();
    const app = await limitedApp({ perSecond: 1 / 30, windowSeconds: 60, prefix }); // 2 per window
    for (let i = 0; i < 4; i++) {
      expect((await app.inject({ method: 'GET', url: '/v1/store' })).statusCode).toBe(401);
      expect((await store(app, `tly_${'U'.repeat(43)}`)).statusCode).toBe(401);
      expect((await store(app, keys.ingest)).statusCode).toBe(403);
    }
    expect([(await store(app, keys.read)).statusCode, (await store(app, keys.read)).statusCode]).toEqual([200, 200]);
    expectRateLimited(await store(app, keys.read), 60);
    for (const url of ['/healthz', '/readyz', '/metrics', '/docs/json', '/healthz', '/readyz', '/metrics']) {
      expect([url, (await app.inject({ method: 'GET', url })).statusCode]).toEqual([url, 200]);
    }
  });

  it('starts afresh in the next window', async () => {
    const prefix = nextPrefix();
    // 2 per window of 1 s: send until refused (a window may end while we send), then wait out the rest of it.
    const [a, b] = [
      await limitedApp({ perSecond: 2, windowSeconds: 1, prefix }),
      await limitedApp({ perSecond: 2, windowSeconds: 1, prefix }),
    ];
    let refused: LightMyRequestResponse | undefined;
    for (let i = 0; i < 50 && !refused; i++) {
      const r = await store(i % 2 ? a : b, keys.read);
      if (r.statusCode === 429) refused = r;
      else expect(r.statusCode).toBe(200);
    }
    expectRateLimited(refused!, 1);
    expect(refused!.headers['retry-after']).toBe('1');
    const left = await f.redis.pttl(counterKey(prefix, 'SHOP_R'));
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(1_000);
    await sleep(left + 20);
    expect((await store(a, keys.read)).statusCode).toBe(200);
    expect((await store(b, keys.read)).statusCode).toBe(200);
  });

  it('takes a busy store’s requests from Redis in leases: one call per many requests far from the limit, never more than the limit', async () => {
    const { counted, calls } = countingConnection();
    try {
      const prefix = nextPrefix();
      // 100 per second over windows of 60 s: 6,000 per window, leases of at most 6,000 / 64 = 93.
      const [a, b] = [
        await limitedApp({ perSecond: 100, windowSeconds: 60, prefix, redis: counted }),
        await limitedApp({ perSecond: 100, windowSeconds: 60, prefix, redis: counted }),
      ];
      for (let i = 0; i < 400; i++) expect((await store(i % 2 ? a : b, keys.read)).statusCode).toBe(200);
      expect(calls()).toBeLessThan(16); // 400 requests: about 5 leases on each instance (and the script's loading)
      const counter = Number(await f.redis.get(counterKey(prefix, 'SHOP_R')));
      expect(counter).toBeGreaterThanOrEqual(400);
      expect(counter).toBeLessThanOrEqual(400 + 2 * 93);

      // 5 per second over 60 s: 300 per window. Leases shrink as the count nears it: at most 300 pass, and each
      // instance leaves at most one lease (at most 300 / 64 = 4) unused.
      const exact = nextPrefix();
      const [c, d] = [
        await limitedApp({ perSecond: 5, windowSeconds: 60, prefix: exact, redis: counted }),
        await limitedApp({ perSecond: 5, windowSeconds: 60, prefix: exact, redis: counted }),
      ];
      let passed = 0;
      for (let i = 0; i < 340; i++) {
        const r = await store(i % 2 ? c : d, keys.read);
        if (r.statusCode === 200) passed++;
        else expectRateLimited(r, 60);
      }
      expect(passed).toBeLessThanOrEqual(300);
      expect(passed).toBeGreaterThanOrEqual(300 - 2 * 4);
    } finally {
      counted.disconnect();
    }
  });

  it('serves a burst of one store’s concurrent requests with one or two Redis calls, not one each in turn', async () => {
    const { counted, calls } = countingConnection();
    try {
      // 50 per window of 60 s: leases of 1 when one request comes at a time.
      const app = await limitedApp({ perSecond: 50 / 60, windowSeconds: 60, prefix: nextPrefix(), redis: counted });
      const burst = async (n: number) =>
        (await Promise.all(Array.from({ length: n }, () => store(app, keys.read)))).map((r) => r.statusCode);
      expect(await burst(20)).toEqual(Array(20).fill(200));
      expect(calls()).toBeLessThanOrEqual(3); // two leases, and the script's loading if it is the first (NOSCRIPT, then EVAL)
      const statuses = await burst(40);
      expect(statuses.filter((s) => s === 200)).toHaveLength(30);
      expect(statuses.filter((s) => s === 429)).toHaveLength(10);
    } finally {
      counted.disconnect();
    }
  });

  it('lets requests through while Redis does not answer the count', async () => {
    const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    down.on('error', () => {});
    try {
      const app = await limitedApp({ perSecond: 1 / 60, windowSeconds: 60, prefix: nextPrefix(), redis: down });
      // Counted nowhere, so their answers tell no limit (not a whole window left that ends now).
      for (let i = 0; i < 3; i++) {
        expect(told(await store(app, keys.read))).toEqual({ status: 200, limit: undefined, remaining: undefined, reset: undefined });
      }
    } finally {
      down.disconnect();
    }
  });

  it('works on a Redis Cluster: one key per store, shared by the instances', async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const c = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
    try {
      const prefix = nextPrefix();
      const [a, b] = [
        await limitedApp({ perSecond: 0.05, windowSeconds: 60, prefix, redis: c }),
        await limitedApp({ perSecond: 0.05, windowSeconds: 60, prefix, redis: c }),
      ];
      expect([
        (await store(a, keys.read)).statusCode,
        (await store(b, keys.both)).statusCode,
        (await store(a, keys.read)).statusCode,
      ]).toEqual([200, 200, 200]);
      expectRateLimited(await store(b, keys.read), 60);
      expect((await store(b, other.read)).statusCode).toBe(200);
      expect(await c.get(counterKey(prefix, 'SHOP_R'))).toBe('4');
      expect(await c.get(counterKey(prefix, 'SHOP_S'))).toBe('1');
    } finally {
      c.disconnect();
      await cluster.stop();
    }
  });
});

describe('the budget of lookups of keys not cached (UNKNOWN_KEY_LOOKUPS_PER_SECOND)', () => {
  it('answers 503 with Retry-After: 1 without a lookup past it, and a real key not yet cached gets through once it refills', async () => {
    const clock = { now: Date.parse('2024-03-15T12:00:00Z') };
    const lookups = { keys: 0 };
    const dynamo = {
      send: (cmd: { input: { Key?: { pk?: { S?: string } } } }) => {
        if (cmd.input.Key?.pk?.S?.startsWith('_key#')) lookups.keys++;
        return f.client.send(cmd as never);
      },
    } as unknown as DynamoDBClient;
    const app = await f.app({
      directory: createTenantDirectory({
        dynamo,
        table: f.table,
        cacheTtlMs: 60_000,
        now: () => clock.now,
        unknownKeyLookupsPerSecond: 0.2, // a bucket of 2 lookups
      }),
    });
    expect((await store(app, `tly_${'A'.repeat(43)}`)).statusCode).toBe(401);
    expect((await store(app, `tly_${'B'.repeat(43)}`)).statusCode).toBe(401);
    expect(lookups.keys).toBe(2);
    for (const key of [`tly_${'C'.repeat(43)}`, keys.read]) {
      const r = await store(app, key);
      expect({ status: r.statusCode, retryAfter: r.headers['retry-after'] }).toEqual({ status: 503, retryAfter: '1' });
      expect(r.json()).toMatchObject({ code: 'TALLY_ERR_UNAVAILABLE', detail: expect.stringMatching(/not cached/) });
    }
    expect(lookups.keys).toBe(2);
    // A key found not to exist is answered from the cache, budget or not.
    expect((await store(app, `tly_${'A'.repeat(43)}`)).statusCode).toBe(401);

    clock.now += 5_000; // one lookup more
    expect((await store(app, keys.read)).statusCode).toBe(200);
    expect(lookups.keys).toBe(3);
    expect((await store(app, `tly_${'D'.repeat(43)}`)).statusCode).toBe(503);
    // Now cached, the key works whatever the budget.
    for (let i = 0; i < 3; i++) expect((await store(app, keys.read)).statusCode).toBe(200);
    expect(lookups.keys).toBe(3);
  });
});
