import { BucketStore } from '@tally/buckets';
import { jobIdFor, QUEUE, queueFor, queueShards, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
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
const visitorRows = (store: string, n: number, tag = 'V'): RowDeltas =>
  new Map(Array.from({ length: n }, (_, v) => [`${store}#visitor#${tag}${v}`, new Map([['2023-123|v', 1n]])]));
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
    const unleased = [];
    for (const [prefix, rows, flushLeaseMs] of [
      ['p', 10, undefined],
      ['q', 100, undefined],
      ['u', 10, 0],
      ['w', 100, 0],
    ] as const) {
      const { buckets, due } = await foldedStores(prefix, STORES, rows);
      const tickDeps = (now: number): SealDeps => ({ ...deps(buckets, now), ...(flushLeaseMs === undefined ? {} : { flushLeaseMs }) });
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
        const r = await sealTick(tickDeps(due + k * BUCKET_MS));
        const sent = (await commands()) - before;
        ticks.push({ stores: r.stores, sealed: r.sealed, flushes: r.flushes, commands: sent, jobs: (await flushJobs()) - jobs });
      }
      expect(ticks[0]).toMatchObject({ stores: STORES, sealed: STORES, flushes: STORES * rows, jobs: STORES * rows });
      if (flushLeaseMs === 0) {
        // Without the lease (the control): every tick visits the stores and sends every pending job again.
        for (const t of ticks.slice(1)) expect(t).toMatchObject({ stores: STORES, flushes: STORES * rows, jobs: STORES * rows });
        unleased.push(ticks);
        continue;
      }
      // Nothing new: the stores are not visited, no job is sent again.
      for (const t of ticks.slice(1)) expect(t).toMatchObject({ stores: 0, flushes: 0, jobs: STORES * rows });
      runs.push(ticks);
    }
    // The later ticks' commands (the work set's read) do not grow with the rows pending.
    expect(runs[1]!.slice(1).map((t) => t.commands)).toEqual(runs[0]!.slice(1).map((t) => t.commands));
    // Without the lease they do, and are above the leased ticks' even with 200 rows.
    for (const k of [1, 2]) {
      expect(unleased[1]![k]!.commands).toBeGreaterThan(unleased[0]![k]!.commands);
      expect(unleased[0]![k]!.commands).toBeGreaterThan(runs[0]![k]!.commands);
    }
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
  it('hand out the due rows of a store whose buckets take the general fold (over 1,600 rows)', { timeout: 120_000 }, async () => {
    // The first VISIT of such a store seals a bucket it does not fold: the due rows come from the VISIT after the
    // general fold, and the first one must not lease them (they would get no job, at every lease end again).
    const { buckets, due } = await foldedStores('g', 1, 1);
    const store = 'gS0';
    const old = `${store}#visitor#V0`;
    const queue = queueFor(queues, QUEUE.dynamoWrites, store);
    const flushes = [];
    for (let k = 0; k <= FLUSH_LEASE_TICKS; k++) {
      const now = due + k * BUCKET_MS;
      const r = await buckets.apply(store, `b${k}`, visitorRows(store, 2_000, `N${k}_`), {
        now: now - BUCKET_MS / 2,
        dedupeTtlSeconds: 3600,
      });
      await buckets.registerStore(store, r.seq);
      const tick = await sealTick(deps(buckets, now));
      expect(tick).toMatchObject({ sealed: 1, rows: 2_000 }); // the general fold of a 2,000-row bucket
      flushes.push(tick.flushes);
    }
    // V0 (idle since `due`) is handed out at `due` and again when its lease ends (no writer runs), under one job.
    expect(flushes).toEqual([1, 0, 0, 0, 1]);
    expect(await queue.getJob(jobIdFor('flush', store, old, t0 + BUCKET_MS))).toBeDefined();
    expect(await buckets.flushTime(store, old)).toBe(due + 2 * LEASE_MS);
  });

  it('hand out the due rows of a store whose fresh bucket another folder finished first', { timeout: 60_000 }, async () => {
    // The FOLD of the bucket VISIT sealed finds it finished (another replica's general fold): its report is not used,
    // so it must not lease the due rows; the general fold's VISIT hands them out.
    const { buckets, due } = await foldedStores('f', 1, 1);
    const store = 'fS0';
    const old = `${store}#visitor#V0`;
    const r = await buckets.apply(store, 'b', visitorRows(store, 1, 'N'), { now: due - BUCKET_MS, dedupeTtlSeconds: 3600 });
    await buckets.registerStore(store, r.seq);
    const other = new BucketStore({ redis, rules, prefix: 'f' });
    const fold = vi.spyOn(buckets, 'foldVisitedEach');
    fold.mockImplementationOnce(async (items, now, leaseMs) => {
      await other.foldSealed(store, { now });
      return BucketStore.prototype.foldVisitedEach.call(buckets, items, now, leaseMs);
    });
    const tick = await sealTick(deps(buckets, due));
    fold.mockRestore();
    expect(tick).toMatchObject({ sealed: 1, flushes: 1 });
    const queue = queueFor(queues, QUEUE.dynamoWrites, store);
    expect(await queue.getJob(jobIdFor('flush', store, old, t0 + BUCKET_MS))).toBeDefined();
    expect(await buckets.flushTime(store, old)).toBe(due + LEASE_MS);
  });

  it(
    'let the writer’s request for a visit at the next tick stand when it writes the rows during the tick',
    { timeout: 60_000 },
    async () => {
      // The writer acks the rows as soon as their jobs exist, and asks for a visit at the next tick (its publish); the
      // tick's own publish must not put that visit off to the lease's end: the next tick retires the store.
      const { buckets, due } = await foldedStores('c', 1, 3);
      const store = 'cS0';
      const queue = queueFor(queues, QUEUE.dynamoWrites, store);
      const add = queue.addBulk.bind(queue);
      const write = vi.spyOn(queue, 'addBulk').mockImplementationOnce(async (jobs) => {
        const added = await add(jobs);
        await writeRows(
          buckets,
          store,
          jobs.map((j) => (j.data as { pk: string }).pk),
          due,
        );
        return added;
      });
      expect(await sealTick(deps(buckets, due))).toMatchObject({ stores: 1, flushes: 3 });
      write.mockRestore();
      expect((await buckets.visitTimes(buckets.shardOf(store))).get(store)).toBeLessThanOrEqual(due);
      expect(await sealTick(deps(buckets, due + BUCKET_MS))).toMatchObject({ stores: 1, flushes: 0, retired: 1 });
    },
  );
});
