import { BucketStore } from '@tally/buckets';
import { jobIdFor, QUEUE, queueFor, queueShards, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { FLUSH_LEASE_TICKS, sealTick, type SealDeps } from './seal.processor';
import { failNext, useAggregatorRedis, writeRows } from './test-fixtures';

/**
 * Rows whose flush jobs are pending (no writer runs: DynamoDB down, writers behind) are leased: a visit hands a due row
 * out once, and later ticks skip it until its lease ends (or the writer's ack reschedules it), so their cost does not
 * follow the unwritten backlog. A row whose job was lost comes due again when its lease ends. Clock injected.
 */
let redis: Redis;
let queues: TallyQueues;
const rules = compileRules(defaultRules); // visitor rows: idle 30 min
const metrics = createAggregatorMetrics(new Registry());
const log = pino({ level: 'silent' });
const BUCKET_MS = 60_000;
const MIN = 60_000;
const LEASE_MS = FLUSH_LEASE_TICKS * BUCKET_MS;
useAggregatorRedis(rules, (r) => void ({ redis, queues } = r));

const t0 = Math.floor((Date.now() - 24 * 60 * MIN) / MIN) * MIN;
const visitorRows = (store: string, n: number): RowDeltas =>
  new Map(Array.from({ length: n }, (_, v) => [`${store}#visitor#V${v}`, new Map([['2023-123|v', 1n]])]));
const deps = (buckets: BucketStore, now: number): SealDeps => ({ buckets, queues, bucketMs: BUCKET_MS, metrics, log, now: () => now });
/** Commands the server ran (those inside scripts included), less INFO and CONFIG. */
const commands = async () =>
  [...(await redis.info('commandstats')).matchAll(/cmdstat_([^:]+):calls=(\d+)/g)].reduce(
    (n, m) => (/^(info|config)/.test(m[1]!) ? n : n + Number(m[2])),
    0,
  );
const flushJobs = () => queues[QUEUE.dynamoWrites].count();

/** `stores` stores with `rows` visitor rows each, sealed and folded at t0 + 1 bucket; due 30 min later. */
async function foldedStores(prefix: string, stores: number, rows: number): Promise<{ buckets: BucketStore; due: number }> {
  const buckets = new BucketStore({ redis, rules, prefix });
  for (let i = 0; i < stores; i++) {
    const s = `${prefix}S${i}`;
    await buckets.apply(s, 'a', visitorRows(s, rows), { now: t0, dedupeTtlSeconds: 3600 });
    await buckets.registerStore(s);
  }
  expect(await sealTick(deps(buckets, t0 + BUCKET_MS))).toMatchObject({ sealed: stores, flushes: 0 });
  return { buckets, due: t0 + BUCKET_MS + 30 * MIN };
}

describe('ticks while flush jobs are pending', () => {
  it('cost the same whether 200 or 2,000 rows wait for their flush: each row is handed out once', { timeout: 120_000 }, async () => {
    const STORES = 20;
    const runs = [];
    for (const [prefix, rows] of [
      ['p', 10],
      ['q', 100],
    ] as const) {
      const { buckets, due } = await foldedStores(prefix, STORES, rows);
      // A fresh row each: the first tick seals and folds it, and its fold hands out (and leases) the due rows.
      for (let i = 0; i < STORES; i++) {
        const s = `${prefix}S${i}`;
        const r = await buckets.apply(s, 'b', new Map([[`${s}#visitor#NEW`, new Map([['2023-123|v', 1n]])]]), {
          now: due - BUCKET_MS,
          dedupeTtlSeconds: 3600,
        });
        await buckets.registerStore(s, r.seq);
      }
      const jobs = await flushJobs();
      const ticks = [];
      for (let k = 0; k < 3; k++) {
        const before = await commands();
        const r = await sealTick(deps(buckets, due + k * BUCKET_MS));
        const sent = (await commands()) - before;
        ticks.push({ stores: r.stores, sealed: r.sealed, flushes: r.flushes, commands: sent, jobs: (await flushJobs()) - jobs });
      }
      expect(ticks[0]).toMatchObject({ stores: STORES, sealed: STORES, flushes: STORES * rows, jobs: STORES * rows });
      // Nothing new: the stores are not visited, no job is sent again.
      for (const t of ticks.slice(1)) expect(t).toMatchObject({ stores: 0, flushes: 0, jobs: STORES * rows });
      runs.push(ticks);
    }
    // The later ticks' commands (the work set's read) do not grow with the rows pending.
    expect(runs[1]!.slice(1).map((t) => t.commands)).toEqual(runs[0]!.slice(1).map((t) => t.commands));
  });

  it('lease the rows a big bucket’s general fold makes due', { timeout: 60_000 }, async () => {
    // Visitor rows flushed at every bucket; a bucket of 2,000 rows takes the general fold (foldSealed), not VISIT's.
    const everyBucket = compileRules({
      ...defaultRules,
      entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor!, flush: { kind: 'bucket' } } },
    });
    const buckets = new BucketStore({ redis, rules: everyBucket, prefix: 'b' });
    const jobs = await flushJobs();
    await buckets.apply('bS0', 'a', visitorRows('bS0', 2_000), { now: t0, dedupeTtlSeconds: 3600 });
    await buckets.registerStore('bS0');
    expect(await sealTick(deps(buckets, t0 + BUCKET_MS))).toMatchObject({ stores: 1, sealed: 1, rows: 2_000, flushes: 2_000 });
    expect((await flushJobs()) - jobs).toBe(2_000);
    // Leased: the next ticks do not visit the store until the lease ends.
    expect(await sealTick(deps(buckets, t0 + 2 * BUCKET_MS))).toMatchObject({ stores: 0, flushes: 0 });
    expect(await sealTick(deps(buckets, t0 + BUCKET_MS + LEASE_MS - 1))).toMatchObject({ stores: 0, flushes: 0 });
    expect(await sealTick(deps(buckets, t0 + BUCKET_MS + LEASE_MS))).toMatchObject({ stores: 1, flushes: 2_000 });
    expect((await flushJobs()) - jobs).toBe(2_000);
  });

  it(
    'hand a row out again when its lease ends: a lost job is enqueued again, a failed one is left failed',
    { timeout: 60_000 },
    async () => {
      for (const q of queueShards(queues, QUEUE.dynamoWrites)) await q.drain(); // the jobs of the test before
      const { buckets, due } = await foldedStores('r', 1, 3);
      const store = 'rS0';
      const pk = (v: number) => `${store}#visitor#V${v}`;
      const idOf = (v: number) => jobIdFor('flush', store, pk(v), t0 + BUCKET_MS);
      const queue = queueFor(queues, QUEUE.dynamoWrites, store);
      expect(await sealTick(deps(buckets, due))).toMatchObject({ stores: 1, flushes: 3 });
      // V0's job is lost (as when the sealer crashed between its visit and the enqueue); V1's fails for good.
      await (await queue.getJob(idOf(0)))!.remove();
      expect(await failNext(redis, queue)).toEqual({ id: idOf(1), store });
      // Leased: not handed out, the store not visited, until the lease ends.
      expect(await sealTick(deps(buckets, due + LEASE_MS - 1))).toMatchObject({ stores: 0, flushes: 0 });
      expect(await queue.getJob(idOf(0))).toBeUndefined();
      // Then each row is handed out again under its job id: the lost job is queued again, the failed one keeps its id
      // in the failed set (BullMQ ignores the add: replayed or purged with the dlq tool), the pending one is as it was.
      expect(await sealTick(deps(buckets, due + LEASE_MS))).toMatchObject({ stores: 1, flushes: 3 });
      expect(await Promise.all([0, 1, 2].map((v) => queue.getJobState(idOf(v))))).toEqual(['waiting', 'failed', 'waiting']);
      // Leased again; the writer's ack of V0 and V2 takes them out of the due rows, and V1 alone is leased on.
      expect(await sealTick(deps(buckets, due + LEASE_MS + BUCKET_MS))).toMatchObject({ stores: 0, flushes: 0 });
      await writeRows(buckets, store, [pk(0), pk(2)], due + LEASE_MS + BUCKET_MS);
      expect(await buckets.flushTime(store, pk(0))).toBeUndefined();
      expect(await buckets.flushTime(store, pk(2))).toBeUndefined();
      expect(await buckets.flushTime(store, pk(1))).toBe(due + 2 * LEASE_MS);
    },
  );
});
