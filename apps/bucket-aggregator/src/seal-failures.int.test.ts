import type { BucketStore } from '@tally/buckets';
import { QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { metricValue } from '@tally/testing';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics, type AggregatorMetrics } from './aggregator-metrics';
import { sealTick, type SealDeps } from './seal.processor';
import { useAggregatorRedis } from './test-fixtures';

/**
 * One store's corrupt key stops that store only: the sealer sets it aside (logged, counted) and seals, folds, flushes
 * and publishes the rest of its batch in the same tick, and visits it again at the next tick.
 */
let redis: Redis;
let queues: TallyQueues;
let buckets: BucketStore;
let registry: Registry;
let metrics: AggregatorMetrics;
let lines: Array<Record<string, unknown>>;
// Store rows are flushed as soon as they are folded: a tick's flush jobs show which stores it folded.
const rules = compileRules({ ...defaultRules, entities: { ...defaultRules.entities, store: { key: [], flush: { kind: 'bucket' } } } });
const BUCKET_MS = 1000;

useAggregatorRedis(rules, (r) => void ({ redis, queues, buckets } = r));
beforeEach(async () => {
  await redis.flushall();
  registry = new Registry();
  metrics = createAggregatorMetrics(registry);
  lines = [];
});

const deps = (now: number): SealDeps => ({
  buckets,
  queues,
  bucketMs: BUCKET_MS,
  metrics,
  log: pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }),
  now: () => now,
});

async function applyViews(stores: readonly string[], at: number, batch: string): Promise<void> {
  for (const store of stores) {
    await buckets.apply(store, `${batch}-${store}`, new Map([[store, new Map([['2023-123|v', 1n]])]]), { now: at, dedupeTtlSeconds: 3600 });
    await buckets.registerStore(store);
  }
}

/** The stores with a flush job waiting. */
async function flushed(): Promise<string[]> {
  return (await queues[QUEUE.dynamoWrites].getWaiting()).map((j) => (j.data as { store: string }).store).sort();
}

/** A store's counts in its outbox (folded), by bucket. */
async function outbox(store: string): Promise<string[]> {
  return (await buckets.readOutbox(store, store)).entries.map((e) => `${e.seq}=${e.value}`);
}

const failures = async (stage: string) => metricValue(await registry.metrics(), 'tally_seal_store_failures_total', { stage });

describe('a store the sealer cannot visit, fold or publish', () => {
  it('is set aside, logged and counted, while the rest of its batch is sealed, folded, flushed and published in the same tick; fixed, it is processed at a later tick', async () => {
    const t0 = 1_000_000;
    const good = ['G0', 'G1', 'G2', 'G3'];
    await applyViews([...good, 'V', 'F', 'P'], t0, 'a');
    // V: its epoch key holds a hash (its VISIT is refused). F: its outbox-entry count is not an integer (its VISIT
    // seals, its FOLD is refused). P: its stats in the work set hold a non-integer (its publish is refused, which
    // refused the whole batch's publish).
    const epochV = (await redis.get(buckets.keys.epoch('V')))!;
    await redis.del(buckets.keys.epoch('V'));
    await redis.hset(buckets.keys.epoch('V'), 'corrupt', '1');
    await redis.hset(buckets.keys.counts('F'), 'entries', 'corrupt');
    const stats = `${buckets.keys.work(0)}stats`;
    await redis.hset(stats, 'P|r', 'corrupt');

    const t1 = t0 + BUCKET_MS;
    expect(await sealTick({ ...deps(t1), batchStores: 500 })).toMatchObject({
      stores: 7,
      sealed: 6,
      folded: 5,
      rows: 5,
      flushes: 5,
      failed: 3,
    });
    expect(await flushed()).toEqual([...good, 'P']);
    for (const s of [...good, 'P']) expect(await outbox(s)).toEqual([`${t0}=1`]);
    // The good stores' backlogs are published (P's is not).
    expect(Number(await redis.hget(stats, 'G0|r'))).toBe(1);
    expect(await redis.hget(stats, 'P|r')).toBe('corrupt');
    // F's bucket is sealed, not folded: it stays at the head of its sealed list.
    expect(await redis.lrange(buckets.keys.sealed('F'), 0, -1)).toEqual([String(t0)]);
    expect(await outbox('F')).toEqual([]);
    expect([await failures('visit'), await failures('fold'), await failures('publish')]).toEqual([1, 1, 1]);
    expect(lines.map((l) => [l.stage, l.store, (l.err as { message: string }).message]).sort()).toEqual([
      ['fold', 'F', expect.stringMatching(/TALLY_ERR_NOT_A_COUNT/)],
      ['publish', 'P', expect.stringMatching(/TALLY_ERR_NOT_A_COUNT .* P /)],
      ['visit', 'V', expect.stringMatching(/WRONGTYPE/)],
    ]);
    // The stores set aside are due again at the next tick, no longer ahead of the stores waiting since before this
    // tick (they were registered at 0).
    const times = await buckets.visitTimes(0);
    expect(['V', 'F', 'P'].map((s) => times.get(s))).toEqual([t1, t1, t1]);

    // Still corrupt at the next tick: set aside again, the others (a batch each since) go on.
    await queues[QUEUE.dynamoWrites].drain();
    await applyViews(good, t1, 'b');
    const t2 = t1 + BUCKET_MS;
    expect(await sealTick(deps(t2))).toMatchObject({ failed: 3, sealed: good.length, flushes: good.length });
    expect([await failures('visit'), await failures('fold'), await failures('publish')]).toEqual([2, 2, 2]);

    // Fixed: each is visited, sealed, folded (F from the head of its sealed list, once), flushed and published.
    await redis.del(buckets.keys.epoch('V'));
    await redis.set(buckets.keys.epoch('V'), epochV);
    await redis.hdel(buckets.keys.counts('F'), 'entries');
    await redis.hset(stats, 'P|r', '0');
    const t3 = t2 + BUCKET_MS;
    expect(await sealTick(deps(t3))).toMatchObject({ failed: 0 });
    expect(await outbox('V')).toEqual([`${t0}=1`]);
    expect(await outbox('F')).toEqual([`${t0}=1`]);
    expect(await redis.lrange(buckets.keys.sealed('F'), 0, -1)).toEqual([]);
    expect(await flushed()).toEqual(expect.arrayContaining(['F', 'V']));
    expect(Number(await redis.hget(stats, 'P|r'))).toBe(1);
    expect([await failures('visit'), await failures('fold'), await failures('publish')]).toEqual([2, 2, 2]);
  });

  it('fails the tick as a whole when every store it visits failed (retried as a job)', async () => {
    await applyViews(['V'], 5_000, 'a');
    await redis.del(buckets.keys.epoch('V'));
    await redis.hset(buckets.keys.epoch('V'), 'corrupt', '1');
    await expect(sealTick(deps(6_000))).rejects.toThrow(/WRONGTYPE/);
    expect(await failures('visit')).toBe(1);
  });
});
