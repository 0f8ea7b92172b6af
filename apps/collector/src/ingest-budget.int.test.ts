import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createIngestBudget } from './ingest-budget';

let redis: Redis;
useRedis((r) => void (redis = r));

// Any instant: the bucket only ever sees the injected clock.
const T0 = 1_780_000_000_000;

function budget(prefix: string, clock: { now: number }, eventsPerSecond = 100, burstSeconds = 2, minEventsPerRequest = 1) {
  return createIngestBudget({ redis, keyPrefix: prefix, eventsPerSecond, burstSeconds, minEventsPerRequest, now: () => clock.now });
}

describe('ingest budget (a token bucket of events per store)', () => {
  it('starts full, takes one token per event, refuses without taking, refills at the rate up to the burst', async () => {
    const clock = { now: T0 };
    const b = budget('a', clock);
    expect(b.limitOf()).toEqual({ eventsPerSecond: 100, burst: 200, minEventsPerRequest: 1 });
    expect(await b.take('S', 150)).toBe(0);
    // 50 left: 60 would need 10 more, 100 ms at 100 events/s; nothing is taken.
    expect(await b.take('S', 60)).toBe(100);
    expect(await b.take('S', 50)).toBe(0);
    expect(await b.take('S', 1)).toBe(10);
    clock.now += 250;
    expect(await b.take('S', 25)).toBe(0);
    expect(await b.take('S', 1)).toBe(10);
    // A long quiet spell refills to the burst, no further.
    clock.now += 3_600_000;
    expect(await b.take('S', 200)).toBe(0);
    expect(await b.take('S', 1)).toBe(10);
  });

  it("keeps stores apart, and a store's own rate (its tenant record) sets its bucket", async () => {
    const clock = { now: T0 };
    const b = budget('b', clock);
    expect(await b.take('FLOOD', 200)).toBe(0);
    expect(await b.take('FLOOD', 1)).toBeGreaterThan(0);
    expect(await b.take('OTHER', 200)).toBe(0);
    // 5 events/s, so the bucket holds 10.
    expect(b.limitOf(5)).toEqual({ eventsPerSecond: 5, burst: 10, minEventsPerRequest: 1 });
    expect(await b.take('SMALL', 10, 5)).toBe(0);
    expect(await b.take('SMALL', 1, 5)).toBe(200);
    clock.now += 200;
    expect(await b.take('SMALL', 1, 5)).toBe(0);
  });

  it('lets a batch larger than the bucket through once the bucket is full, into a debt the next batches wait out; never refills when the clock steps back', async () => {
    const clock = { now: T0 };
    const b = budget('c', clock, 10, 1);
    expect(await b.take('S', 4)).toBe(0);
    // 6 left of 10: a 1,000-event batch waits for the full bucket (400 ms), then takes it and 990 more (debt).
    expect(await b.take('S', 1000)).toBe(400);
    clock.now += 400;
    expect(await b.take('S', 1000)).toBe(0);
    // -990: one event waits until the debt is paid and its token is there (99.1 s); another large batch until the
    // bucket is full again (100 s). Nothing is taken meanwhile.
    expect(await b.take('S', 1)).toBe(99_100);
    expect(await b.take('S', 1000)).toBe(100_000);
    clock.now += 99_100;
    expect(await b.take('S', 1)).toBe(0);
    clock.now -= 60_000;
    expect(await b.take('S', 1)).toBe(100);
  });

  it('never lets a store through faster than its rate over time, whatever its batch size', async () => {
    // 10 events per second, a bucket of 20; batches of 1,000 (MAX_EVENTS_PER_REQUEST).
    const clock = { now: T0 };
    const b = budget('f', clock, 10, 2);
    // A client that tries every 100 ms for a minute: one batch passes (the old bucket let 30 through, 30,000 events).
    let accepted = 0;
    for (let t = 0; t < 60_000; t += 100) {
      clock.now = T0 + t;
      if ((await b.take('GREEDY', 1000)) === 0) accepted += 1000;
    }
    expect(accepted).toBe(1000);
    // A client that waits as long as each Retry-After (whole seconds) says, for an hour: every retry passes, a batch
    // every 100 s, which is the rate (plus the first batch, from the full bucket).
    const start = T0 + 3_600_000;
    clock.now = start;
    expect(await b.take('POLITE', 1000)).toBe(0);
    accepted = 1000;
    for (;;) {
      const wait = await b.take('POLITE', 1000);
      expect(wait).toBeGreaterThan(0);
      clock.now += Math.ceil(wait / 1000) * 1000;
      if (clock.now > start + 3_600_000) break;
      expect(await b.take('POLITE', 1000)).toBe(0);
      accepted += 1000;
    }
    expect(accepted).toBeLessThanOrEqual(10 * 3_600 + 1000);
    expect(accepted).toBeGreaterThanOrEqual(10 * 3_600);
  });

  it('charges a request at least the minimum, so a store sends at most its rate / the minimum requests per second', async () => {
    const clock = { now: T0 };
    // 100 events/s, a bucket of 200, at least 10 events a request.
    const b = budget('g', clock, 100, 2, 10);
    expect(b.limitOf()).toEqual({ eventsPerSecond: 100, burst: 200, minEventsPerRequest: 10 });
    let passed = 0;
    while ((await b.take('S', 1)) === 0) passed++;
    expect(passed).toBe(20);
    // Ten tokens come back in 100 ms: one more 1-event request. A larger request costs its events.
    expect(await b.take('S', 1)).toBe(100);
    clock.now += 100;
    expect(await b.take('S', 1)).toBe(0);
    clock.now += 150;
    expect(await b.take('S', 15)).toBe(0);
    expect(await b.take('S', 1)).toBe(100);
    // A rate below the minimum: a request waits for a full bucket (2 events) and leaves it 8 in debt.
    expect(await b.take('SLOW', 1, 1)).toBe(0);
    expect(await b.take('SLOW', 1, 1)).toBe(10_000);
  });

  it('does not limit a store when neither the default nor its tenant record sets a rate', async () => {
    const b = budget('d', { now: T0 }, 0);
    expect(await b.take('S', 1_000_000)).toBe(0);
    expect(await redis.keys('d:*')).toEqual([]);
    // Its own rate of 1 event/s (a bucket of 2): 3 events leave the bucket 1 in debt, so one more waits 2 s.
    expect(await b.take('S', 3, 1)).toBe(0);
    expect(await b.take('S', 1, 1)).toBe(2000);
  });

  it('keeps one expiring key per store', async () => {
    const b = budget('e', { now: T0 });
    await b.take('S', 1);
    expect(await redis.keys('e:*')).toEqual(['e:ingest-budget:{S}']);
    const ttl = await redis.pttl('e:ingest-budget:{S}');
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3_000);
    // A bucket in debt lives until the bucket would be full again: expiring sooner would forgive the debt.
    await b.take('DEBT', 1000, 10);
    expect(await redis.pttl('e:ingest-budget:{DEBT}')).toBeGreaterThan(100_000);
  });
});
