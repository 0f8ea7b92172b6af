import type { Principal } from '@tally/tenants';
import Fastify from 'fastify';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerStoreRateLimit } from './rate-limit';

/**
 * The Redis of the limit in memory: the lease script (INCRBY, the window's TTL set at its first count, on `clock`: a
 * window's key is gone once its TTL has run out) and GET (of the count when it is sent), each answered when the test
 * says (`answerGets`), or failing while `down`; `gets` counts the GETs sent. A lease call's answer comes back
 * `state.rtt` ms of `clock` after Redis ran it (the replica's clock, when the test shares it).
 */
function fakeRedis(windowMs: number, clock = { now: 0 }) {
  const windows = new Map<string, { count: number; end: number }>();
  const gets: Array<() => void> = [];
  const state = { down: false, gets: 0, leases: 0, rtt: 0 };
  /** The key's window, if it has not ended (a new one, counting `n`, otherwise). */
  const count = (key: string, n: number) => {
    const w = windows.get(key);
    if (w && w.end > clock.now) w.count += n;
    else windows.set(key, { count: n, end: clock.now + windowMs });
    return windows.get(key)!;
  };
  const redis = {
    tallyRateLease: async (key: string, size: number) => {
      if (state.down) throw new Error('connection is closed');
      state.leases++;
      const w = count(key, Number(size));
      const answer = [w.count, w.end - clock.now];
      clock.now += state.rtt;
      return answer;
    },
    get: (key: string) => {
      state.gets++;
      const w = windows.get(key);
      const read = w && w.end > clock.now ? String(w.count) : null;
      return new Promise<string | null>((resolve, reject) =>
        gets.push(() => (state.down ? reject(new Error('connection is closed')) : resolve(read))),
      );
    },
  };
  return {
    redis: redis as unknown as Redis,
    state,
    /** Another replica's requests, counted in Redis. */
    add: (key: string, n: number) => void count(key, n),
    /** The key's count in Redis (null: no window). */
    counted: (key: string) => {
      const w = windows.get(key);
      return w && w.end > clock.now ? w.count : null;
    },
    /** Redis loses the key (a restart or failover without it): its window ends now. */
    lose: (key: string) => void windows.delete(key),
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

  it("ends a lease's window when Redis ends it, not the lease answer's trip later: a request after it leases from the next window", async () => {
    const windowMs = 8_000;
    const clock = { now: 0 };
    const { redis, state, counted } = fakeRedis(windowMs, clock);
    // 80 per second over windows of 8 s: 640 a window, leases of 10.
    const { app, ask } = await limitedApp(redis, clock, 80, 8);
    // The window's first lease is read 20 ms after Redis began the window (and set its end, 8 s from then).
    state.rtt = 20;
    expect(await ask()).toEqual({ status: 200, limit: '640', remaining: '639', reset: '8' });
    state.rtt = 0;
    // 5 ms after Redis's window ended, 9 of the lease's 10 unused: they were of that window, and this request is not
    // passed on them (uncounted in the next window, told the old count and a window about to end) but leases anew.
    clock.now = windowMs + 5;
    expect(await ask()).toEqual({ status: 200, limit: '640', remaining: '639', reset: '8' });
    expect(counted('t:query-rate:{S1}')).toBe(10);
    await app.close();
  });

  it('starts the lease afresh when its call finds the window it leased from gone in Redis: the old count, a read of it on its way too, is not the new window’s', async () => {
    const windowMs = 8_000;
    const clock = { now: 0 };
    const key = 't:query-rate:{S1}';
    const { redis, add, lose, counted, answerGets } = fakeRedis(windowMs, clock);
    // 640 a window, leases of 10; another replica takes 500 of it, which this one reads an eighth of the window later.
    const { app, ask } = await limitedApp(redis, clock, 80, 8);
    expect(await ask()).toMatchObject({ status: 200, remaining: '639' });
    add(key, 500);
    clock.now += windowMs / 8;
    expect(await ask()).toMatchObject({ status: 200, remaining: '638' });
    await answerGets();
    expect(await ask()).toMatchObject({ status: 200, remaining: '137' });
    // An eighth later the count is read again (510); that read is still on its way when Redis loses the key (a
    // failover) and another replica's request opens the next window, its count 1.
    clock.now += windowMs / 8;
    expect(await ask()).toMatchObject({ status: 200, remaining: '136' });
    lose(key);
    add(key, 1);
    // The rest of the lease passes as leased; the next lease (10) is of the new window: 11 counted, 9 of it unused.
    for (let i = 0; i < 6; i++) expect((await ask()).status).toBe(200);
    expect(await ask()).toMatchObject({ status: 200, remaining: '638' });
    expect(counted(key)).toBe(11);
    // The old window's read, answered now, does not raise the new window's count.
    await answerGets();
    expect(await ask()).toMatchObject({ status: 200, remaining: '637' });
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
