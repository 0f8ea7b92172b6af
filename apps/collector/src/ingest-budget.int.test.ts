import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createIngestBudget } from './ingest-budget';

let redis: Redis;
useRedis((r) => void (redis = r));

// Any instant: the bucket only ever sees the injected clock.
const T0 = 1_780_000_000_000;

function budget(prefix: string, clock: { now: number }, eventsPerSecond = 100, burstSeconds = 2) {
  return createIngestBudget({ redis, keyPrefix: prefix, eventsPerSecond, burstSeconds, now: () => clock.now });
}

describe('ingest budget (a token bucket of events per store)', () => {
  it('starts full, takes one token per event, refuses without taking, refills at the rate up to the burst', async () => {
    const clock = { now: T0 };
    const b = budget('a', clock);
    expect(b.limitOf()).toEqual({ eventsPerSecond: 100, burst: 200 });
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
    expect(b.limitOf(5)).toEqual({ eventsPerSecond: 5, burst: 10 });
    expect(await b.take('SMALL', 10, 5)).toBe(0);
    expect(await b.take('SMALL', 1, 5)).toBe(200);
    clock.now += 200;
    expect(await b.take('SMALL', 1, 5)).toBe(0);
  });

  it('lets a batch larger than the bucket through once the bucket is full, and never refills when the clock steps back', async () => {
    const clock = { now: T0 };
    const b = budget('c', clock, 10, 1);
    expect(await b.take('S', 4)).toBe(0);
    // 6 left of 10: a 1,000-event batch waits for the full bucket (400 ms), then takes all of it.
    expect(await b.take('S', 1000)).toBe(400);
    clock.now += 400;
    expect(await b.take('S', 1000)).toBe(0);
    expect(await b.take('S', 1)).toBe(100);
    clock.now -= 60_000;
    expect(await b.take('S', 1)).toBe(100);
  });

  it('does not limit a store when neither the default nor its tenant record sets a rate', async () => {
    const b = budget('d', { now: T0 }, 0);
    expect(await b.take('S', 1_000_000)).toBe(0);
    expect(await redis.keys('d:*')).toEqual([]);
    expect(await b.take('S', 3, 1)).toBe(0);
    expect(await b.take('S', 1, 1)).toBe(1000);
  });

  it('keeps one expiring key per store', async () => {
    const b = budget('e', { now: T0 });
    await b.take('S', 1);
    expect(await redis.keys('e:*')).toEqual(['e:ingest-budget:{S}']);
    const ttl = await redis.pttl('e:ingest-budget:{S}');
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3_000);
  });
});
