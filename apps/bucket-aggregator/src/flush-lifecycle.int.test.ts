import { BucketStore } from '@tally/buckets';
import { jobIdFor, QUEUE, queueFor, queueShards, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { sealTick, type SealDeps } from './seal.processor';
import { useAggregatorRedis } from './test-fixtures';

// A tick between the writer's ack and its job's completion. An ack that left entries of the bucket opened when the
// acked one was sealed kept the row's dirty time (that bucket's seq equals the fold time that set it), so the row's
// next job had the running job's id: the tick's add was ignored (the job still active) yet the row was leased, and its
// remaining counts waited for the lease to end (4 ticks), not for the first tick after the job completed. The ack now
// moves the dirty time at least 1 ms, so the next job has an id of its own.

let redis: Redis;
let queues: TallyQueues;
const rules = compileRules(defaultRules);
const everyBucket = compileRules({
  ...defaultRules,
  entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor!, flush: { kind: 'bucket' } } },
});
const metrics = createAggregatorMetrics(new Registry());
const log = pino({ level: 'silent' });
const B = 60_000;
const MIN = 60_000;
useAggregatorRedis(rules, (r) => void ({ redis, queues } = r));

const t0 = Math.floor((Date.now() - 24 * 60 * MIN) / MIN) * MIN;
const visitorRows = (store: string, n: number, tag = 'V'): RowDeltas =>
  new Map(Array.from({ length: n }, (_, v) => [`${store}#visitor#${tag}${v}`, new Map([['2023-123|v', 1n]])]));
const deps = (buckets: BucketStore, now: number): SealDeps => ({ buckets, queues, bucketMs: B, metrics, log, now: () => now });

describe('a tick between the writer’s ack and its job’s completion', () => {
  it('a row acked with entries left gets its next job at the first tick after its job completed, not when its lease ends', async () => {
    for (const q of queueShards(queues, QUEUE.dynamoWrites)) await q.obliterate({ force: true });
    const buckets = new BucketStore({ redis, rules: everyBucket, prefix: 'k' });
    const store = 'kS0';
    const R = `${store}#visitor#V0`;
    const queue = queueFor(queues, QUEUE.dynamoWrites, store);
    await buckets.apply(store, 'a', visitorRows(store, 1), { now: t0, dedupeTtlSeconds: 3600 });
    await buckets.registerStore(store);
    // Tick 1 seals and folds bucket 1: R due at once, handed out and leased.
    expect(await sealTick(deps(buckets, t0 + B))).toMatchObject({ sealed: 1, flushes: 1 });
    const id = jobIdFor('flush', store, R, t0 + B);
    // A writer takes the job and reads R's outbox (bucket 1).
    const connection = redis.duplicate();
    const w = new Worker(queue.name, null, { connection, prefix: queue.opts.prefix, autorun: false });
    w.on('error', () => undefined);
    try {
      const job = (await w.getNextJob('tok'))!;
      expect(job.id).toBe(id);
      const read = (await buckets.readOutbox(store, R)).entries.map((e) => e.field);
      // Bucket 2 of R comes and is folded by tick 2 while the writer writes (its add under the same id: ignored).
      const r = await buckets.apply(store, 'b', visitorRows(store, 1), { now: t0 + 1.5 * B, dedupeTtlSeconds: 3600 });
      await buckets.registerStore(store, r.seq);
      expect(await sealTick(deps(buckets, t0 + 2 * B))).toMatchObject({ sealed: 1 });
      // The writer acks bucket 1 (bucket 2 is left: the row stays dirty, due at once by its policy) and publishes.
      const ta = t0 + 2 * B + 10_000;
      expect(await buckets.ackOutbox(store, R, read, ta)).toBeGreaterThan(0);
      await buckets.publishBacklog(store, await buckets.storeBacklog(store), undefined, ta);
      // Tick 3 runs before the job's completion reaches Redis.
      expect(await sealTick(deps(buckets, t0 + 3 * B))).toMatchObject({ stores: 1, flushes: 1 });
      await job.moveToCompleted({}, 'tok', false);
    } finally {
      await w.close();
      await connection.quit();
    }
    expect(await queue.getJob(id)).toBeUndefined(); // removed on completion
    // After the completion R (bucket 2 unwritten) has a job: added by tick 3 under a new id, or by the next tick.
    await sealTick(deps(buckets, t0 + 4 * B));
    const jobs = await queue.getJobs(['waiting', 'delayed', 'active']);
    expect(jobs.map((j) => j.data.pk)).toEqual([R]);
    expect(jobs[0]!.id).not.toBe(id);
    const dirty = Number(await redis.zscore(`k:{${store}}:dirty`, R));
    expect(dirty).toBeGreaterThan(t0 + B); // moved by the ack, so the new id
    expect(dirty).toBeLessThanOrEqual(t0 + 2 * B); // never past the fold of the entry left (the flush lag not understated)
  }, 60_000);
});
