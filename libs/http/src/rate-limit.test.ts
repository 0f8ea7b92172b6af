import type { Principal } from '@tally/tenants';
import Fastify from 'fastify';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerStoreRateLimit } from './rate-limit';

/**
 * The Redis of the limit in memory: the lease script (INCRBY, the window's TTL set at its first count) and GET, each
 * answered when the test says (`answerGets`), or failing while `down`; `gets` counts the GETs sent.
 */
function fakeRedis(windowMs: number) {
  const counts = new Map<string, number>();
  const gets: Array<() => void> = [];
  const state = { down: false, gets: 0, leases: 0 };
  const redis = {
    tallyRateLease: async (key: string, size: number) => {
      if (state.down) throw new Error('connection is closed');
      state.leases++;
      const n = (counts.get(key) ?? 0) + Number(size);
      counts.set(key, n);
      return [n, windowMs];
    },
    get: (key: string) => {
      state.gets++;
      return new Promise<string | null>((resolve, reject) =>
        gets.push(() => (state.down ? reject(new Error('connection is closed')) : resolve(String(counts.get(key) ?? 0)))),
      );
    },
  };
  return {
    redis: redis as unknown as Redis,
    state,
    /** Another replica's requests, counted in Redis. */
    add: (key: string, n: number) => counts.set(key, (counts.get(key) ?? 0) + n),
    /** Answers the GETs sent so far. */
    answerGets: async () => {
      for (const answer of gets.splice(0)) answer();
      await new Promise((r) => setImmediate(r));
    },
  };
}

/** An app whose one route is limited to `perSecond × windowSeconds` requests per window, all of store S1. */
async function limitedApp(redis: Redis, clock: { now: number }, perSecond: number, windowSeconds: number) {
  const app = Fastify();
  app.addHook('onRequest', async (req) => {
    req.principal = { store: 'S1', scopes: ['read'] } as unknown as Principal;
  });
  await registerStoreRateLimit(app, {
    redis,
    keyPrefix: 't',
    perSecond,
    windowSeconds,
    registry: new Registry(),
    settingName: 'QUERY_RATE_LIMIT_PER_SECOND',
    now: () => clock.now,
  });
  app.get('/thing', async () => ({ ok: true }));
  await app.ready();
  const ask = async () => {
    const r = await app.inject({ method: 'GET', url: '/thing' });
    return {
      status: r.statusCode,
      limit: r.headers['x-ratelimit-limit'],
      remaining: r.headers['x-ratelimit-remaining'],
      reset: r.headers['x-ratelimit-reset'],
    };
  };
  return { app, ask };
}

describe('registerStoreRateLimit', () => {
  it("reads the store's count again without waiting for it once an answer finds it an eighth of the window old, one read at a time", async () => {
    const windowMs = 8_000;
    const { redis, state, add, answerGets } = fakeRedis(windowMs);
    const clock = { now: 0 };
    // 80 per second over windows of 8 s: 640 a window, leases of 640 / 64 = 10.
    const { app, ask } = await limitedApp(redis, clock, 80, 8);
    expect(await ask()).toEqual({ status: 200, limit: '640', remaining: '639', reset: '8' });
    // Another replica takes 600 of the window.
    add('t:query-rate:{S1}', 600);
    // Less than an eighth of the window after the lease: the lease's count, no read.
    clock.now += windowMs / 8 - 1;
    expect(await ask()).toMatchObject({ status: 200, remaining: '638' });
    expect(state.gets).toBe(0);
    // An eighth: this answer does not wait for the read it sends (the GET is not answered yet), nor does the next,
    // which sends none while one is on its way.
    clock.now += 1;
    expect(await ask()).toMatchObject({ status: 200, remaining: '637' });
    expect(await ask()).toMatchObject({ status: 200, remaining: '636' });
    expect(state.gets).toBe(1);
    // Read: the answers from then on count the other replica's requests (610 in Redis, 5 of this lease not used yet).
    await answerGets();
    expect(await ask()).toMatchObject({ status: 200, remaining: '35' });
    expect(state).toMatchObject({ gets: 1, leases: 1 });
    // The read changes no lease: what passes is what the leases grant.
    for (let i = 0; i < 5; i++) expect((await ask()).status).toBe(200);
    expect(state.leases).toBe(1);
    expect(await ask()).toMatchObject({ status: 200, remaining: '29' });
    expect(state.leases).toBe(2);

    // A read that fails leaves the count as it was, and the next answer an eighth later tries again.
    clock.now += windowMs / 8;
    await ask();
    state.down = true;
    await answerGets();
    state.down = false;
    expect(await ask()).toMatchObject({ status: 200 });
    expect(state.gets).toBe(3);
    await app.close();
  });

  it('tells no limit on the answers of requests it could not count (Redis down), and tells it again once it counts', async () => {
    const { redis, state } = fakeRedis(60_000);
    const { app, ask } = await limitedApp(redis, { now: 0 }, 1, 60);
    state.down = true;
    // Two at once (one lease call for both): both pass, uncounted, and say nothing of a limit.
    const none = { status: 200, limit: undefined, remaining: undefined, reset: undefined };
    expect(await Promise.all([ask(), ask()])).toEqual([none, none]);
    state.down = false;
    expect(await ask()).toEqual({ status: 200, limit: '60', remaining: '59', reset: '60' });
    await app.close();
  });
});
