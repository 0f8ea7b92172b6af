import { BucketStore } from '@tally/buckets';
import { aggregatorEnv } from '@tally/config';
import { storeShard } from '@tally/key-layout';
import {
  closeQueues,
  createQueues,
  createShardWorkers,
  enqueue,
  findLeftoverShards,
  LEFTOVER_LOOK_MS,
  LeftoverQueueShards,
  MAX_QUEUE_SHARDS,
  QUEUE,
  queueFor,
  queueShards,
  type TallyQueues,
} from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { startRedis, waitFor, waitForQueuesIdle, type RedisHandle } from '@tally/testing';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor } from './events.processor';
import { FLUSH_LEASE_TICKS, sealProcessor } from './seal.processor';
import { failNext, sealJob } from './test-fixtures';

/**
 * QUEUE_SHARDS lowered under queued jobs: the batches queued on the events shards past it are applied, each once, by
 * the aggregator of the new count (LeftoverQueueShards serving them), and the flush jobs stranded on the dynamo-writes
 * shards past it are redundant (their rows are flushed from their own shards) and removed.
 */
let server: RedisHandle;
/** The test's own connection (set-ups and checks). */
let redis: Redis;
/** The workers' connection. */
let workerRedis: Redis;
const log = pino({ level: 'silent' });
const rules = compileRules({ ...defaultRules, entities: { ...defaultRules.entities, store: { key: [], flush: { kind: 'bucket' } } } });
const layout = (shards: number) => ({ keyPrefix: 't', shards });
const STORES = Array.from({ length: 16 }, (_, i) => `S${i}`);
const LOCK_MS = 1000;
let cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  workerRedis = new Redis(server.url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  await redis.quit();
  await workerRedis.quit();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

/** Queues of QUEUE_SHARDS=shards on `connection`, closed after the test. */
function queuesOf(shards: number, connection: Redis = redis): TallyQueues {
  const queues = createQueues(connection, layout(shards));
  cleanups.push(() => closeQueues(queues));
  return queues;
}

/**
 * A bucket aggregator of QUEUE_SHARDS=shards: events workers of its shards, and its leftover shards (served with the
 * same events processor, flush jobs removed once `graceMs` old), checked on the test's clock.
 */
function aggregator(shards: number, clock: { now: number }, graceMs = 0) {
  const buckets = new BucketStore({ redis, rules, prefix: 't', shards });
  const metrics = createAggregatorMetrics(new Registry());
  const processor = eventsProcessor({ buckets, rules, timeZoneOf: async () => 'UTC', dedupeTtlSeconds: 3600, metrics, log });
  const queues = queuesOf(shards);
  const opts = { connection: workerRedis, concurrency: 4, lockMs: LOCK_MS };
  const workers = createShardWorkers(QUEUE.events, processor, layout(shards), opts);
  for (const w of workers) w.on('error', () => undefined);
  const leftovers = new LeftoverQueueShards({ queues, log, now: () => clock.now })
    .serve(QUEUE.events, processor, opts)
    .discard(QUEUE.dynamoWrites, graceMs);
  cleanups.push(async () => {
    await leftovers.close();
    await Promise.all(workers.map((w) => w.close()));
  });
  return { buckets, metrics, queues, leftovers };
}

const batch = (store: string, batchId: string) => ({
  batchId,
  store,
  receivedAt: Date.now(),
  events: [{ type: 'view', ts: Date.parse('2023-05-03T10:00:00Z'), dims: { product: 'P1' } }],
});

/** The store's views in Redis (open and sealed buckets and outbox), summed. */
async function views(buckets: BucketStore, store: string): Promise<number> {
  const [row] = await buckets.snapshot(store, [store]);
  return row!.entries.reduce((n, e) => n + Number(e.value), 0);
}

const counter = async (c: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await c.get()).values[0]?.value ?? 0;

describe('lowering QUEUE_SHARDS 4 → 2 with events queued on every shard', () => {
  it('applies every batch of the removed shards 2 and 3 once: waiting, delayed, queued twice, and one an old worker left active', async () => {
    const old = queuesOf(4);
    expect(new Set(STORES.map((s) => storeShard(s, 4)))).toEqual(new Set([0, 1, 2, 3]));
    // Under QUEUE_SHARDS=4 (ingest still running): per store a batch queued twice (a retried request: another job id,
    // the same batch), and one delayed; and the first batch of shard 3 taken by an old worker that died with it.
    for (const s of STORES) {
      await enqueue(old, QUEUE.events, batch(s, `${s}-1`), { jobId: `${s}-1a` });
      await enqueue(old, QUEUE.events, batch(s, `${s}-1`), { jobId: `${s}-1b` });
      await enqueue(old, QUEUE.events, batch(s, `${s}-2`), { jobId: `${s}-2`, delay: 300 });
    }
    const shard3 = queueShards(old, QUEUE.events)[3]!;
    const dyingRedis = redis.duplicate();
    cleanups.push(() => dyingRedis.quit());
    const dying = new Worker(QUEUE.events, () => new Promise(() => undefined), {
      connection: dyingRedis,
      prefix: shard3.opts.prefix,
      lockDuration: LOCK_MS,
      stalledInterval: LOCK_MS,
      concurrency: 1,
    });
    dying.on('error', () => undefined);
    await waitFor(async () => (await shard3.getActiveCount()) === 1, { message: 'the old worker took a job' });
    await dying.close(true);
    const stalledId = (await shard3.getActive())[0]!.id;

    // Restarted with QUEUE_SHARDS=2: its own workers serve shards 0 and 1; the first check finds shards 2 and 3.
    const clock = { now: 1_000_000 };
    const agg = aggregator(2, clock);
    expect(await findLeftoverShards(redis, layout(2), QUEUE.events)).toEqual([2, 3]);
    await agg.leftovers.check();
    expect(agg.leftovers.shards().map((l) => [l.queue, l.shard, l.served])).toEqual([
      [QUEUE.events, 2, true],
      [QUEUE.events, 3, true],
    ]);
    // The job the old worker left active is taken back by the stalled-job check of shard 3's worker.
    await waitForQueuesIdle(queueShards(old, QUEUE.events), { includeDelayed: true, timeoutMs: 20_000 });
    expect(await shard3.getJobState(stalledId!)).not.toBe('active');

    // Every batch counted once; the next check closes the shards' workers and forgets them.
    for (const s of STORES) expect(await views(agg.buckets, s)).toBe(2);
    expect(await counter(agg.metrics.batchesApplied)).toBe(2 * STORES.length);
    expect(await counter(agg.metrics.duplicateBatches)).toBe(STORES.length);
    clock.now += 1000;
    await agg.leftovers.check();
    expect(agg.leftovers.shards()).toEqual([]);
    expect(await findLeftoverShards(redis, layout(2), QUEUE.events)).toEqual([]);
  }, 30_000);

  it('a batch queued on a removed shard and again on its new one (a producer of each count) is counted once', async () => {
    const old = queuesOf(4);
    const clock = { now: 1_000_000 };
    const agg = aggregator(2, clock);
    const s = STORES.find((x) => storeShard(x, 4) === 3)!;
    await enqueue(old, QUEUE.events, batch(s, 'same'), { jobId: 'on-3' });
    await enqueue(agg.queues, QUEUE.events, batch(s, 'same'), { jobId: 'on-new' });
    await agg.leftovers.check();
    await waitForQueuesIdle([...queueShards(old, QUEUE.events), ...queueShards(agg.queues, QUEUE.events)], { timeoutMs: 20_000 });
    expect(await views(agg.buckets, s)).toBe(1);
    expect(await counter(agg.metrics.duplicateBatches)).toBe(1);
  }, 30_000);

  it('looks for leftover shards at the first check and every 5 minutes after (one EXISTS per shard and queue), and sends nothing in between', async () => {
    expect(aggregatorEnv.shape.QUEUE_SHARDS.safeParse(MAX_QUEUE_SHARDS).success).toBe(true);
    expect(aggregatorEnv.shape.QUEUE_SHARDS.safeParse(MAX_QUEUE_SHARDS + 1).success).toBe(false);
    const counted = new Redis(server.url, { maxRetriesPerRequest: null });
    cleanups.push(() => counted.quit());
    const sent: string[] = [];
    const send = counted.sendCommand.bind(counted);
    counted.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
      sent.push((args[0] as { name: string }).name);
      return send(...args);
    }) as Redis['sendCommand'];
    const clock = { now: 1_000_000 };
    const leftovers = new LeftoverQueueShards({ queues: queuesOf(2, counted), log, now: () => clock.now });
    cleanups.push(() => leftovers.close());
    await leftovers.check();
    expect(sent.filter((c) => c === 'exists').length).toBe(2 * (MAX_QUEUE_SHARDS - 2));
    sent.length = 0;
    for (clock.now += 30_000; clock.now < 1_000_000 + LEFTOVER_LOOK_MS; clock.now += 30_000) await leftovers.check();
    expect(sent).toEqual([]);
    // A job queued on shard 3 by a producer still on QUEUE_SHARDS=4 is found at the next look, and counted.
    const old = queuesOf(4);
    const s = STORES.find((x) => storeShard(x, 4) === 3)!;
    await enqueue(old, QUEUE.events, batch(s, 'late'));
    clock.now = 1_000_000 + LEFTOVER_LOOK_MS;
    await leftovers.check();
    expect(leftovers.shards()).toEqual([{ queue: QUEUE.events, shard: 3, pending: 1, kept: 0, served: false }]);
    const [events] = leftovers.counted();
    expect(await events!.getJobCounts('waiting', 'failed')).toEqual({ waiting: 1, failed: 0 });
  });
});

describe('lowering QUEUE_SHARDS 4 → 2 with flush jobs queued on every shard', () => {
  /** One seal job per shard of `buckets.shards`, enqueueing flushes on `queues`, at `now`. */
  async function sealRound(buckets: BucketStore, queues: TallyQueues, now: number) {
    const seal = sealProcessor({ buckets, queues, bucketMs: 1000, metrics: createAggregatorMetrics(new Registry()), log, now: () => now });
    for (let shard = 0; shard < buckets.shards; shard++) await seal(sealJob(shard, now));
  }

  it('a flush stranded on a removed shard is redundant: its row comes due again and is enqueued again, same id, on its own shard; the stranded jobs are removed, failed ones kept', async () => {
    const t0 = Date.parse('2023-05-03T10:00:00Z');
    const old = queuesOf(4);
    const oldBuckets = new BucketStore({ redis, rules, prefix: 't', shards: 4 });
    for (const s of STORES) {
      const r = await oldBuckets.apply(s, `${s}-a`, new Map([[s, new Map([['2023-123|v', 1n]])]]), { now: t0, dedupeTtlSeconds: 3600 });
      await oldBuckets.registerStore(s, r.seq);
    }
    // Sealed and folded under QUEUE_SHARDS=4: a flush job per store, on its dynamo-writes shard of 4; no writer ran.
    await sealRound(oldBuckets, old, t0 + 1000);
    const stranded = new Map<string, string>();
    for (const shard of [2, 3])
      for (const job of await queueShards(old, QUEUE.dynamoWrites)[shard]!.getJobs(['waiting'])) stranded.set(job.id!, job.data.store);
    expect(stranded.size).toBe(STORES.filter((s) => storeShard(s, 4) >= 2).length);
    // A flush job of shard 3 failed for good (a dead letter), before the change.
    const shard3 = queueShards(old, QUEUE.dynamoWrites)[3]!;
    const { id: deadId, store: deadStore } = await failNext(redis, shard3);

    // Under QUEUE_SHARDS=2 the sealer finds each row due again once its flush lease ends (FLUSH_LEASE_TICKS ticks of
    // 1 s after the round that enqueued it), and enqueues its flush, same job id, on its own shard.
    const clock = { now: 1_000_000 };
    const agg = aggregator(2, clock, 60_000);
    await sealRound(agg.buckets, agg.queues, t0 + 1000 + FLUSH_LEASE_TICKS * 1000);
    for (const [id, store] of stranded) expect(await queueFor(agg.queues, QUEUE.dynamoWrites, store).getJob(id)).toBeDefined();
    expect(storeShard(deadStore, 2)).toBeLessThan(2);

    // Younger than the grace (a sealer still on the old count may be enqueueing them): left for now.
    await agg.leftovers.check();
    expect(agg.leftovers.shards().find((l) => l.queue === QUEUE.dynamoWrites && l.shard === 2)).toMatchObject({
      pending: expect.any(Number),
    });
    expect(await queueShards(old, QUEUE.dynamoWrites)[2]!.getWaitingCount()).toBeGreaterThan(0);
    // Past it: removed; the failed job stays (for the dlq tool), and is counted.
    const later = aggregator(2, clock, 0);
    await later.leftovers.check();
    for (const shard of [2, 3]) expect(await queueShards(old, QUEUE.dynamoWrites)[shard]!.getWaitingCount()).toBe(0);
    expect(later.leftovers.shards().filter((l) => l.queue === QUEUE.dynamoWrites)).toEqual([
      { queue: QUEUE.dynamoWrites, shard: 3, pending: 0, kept: 1, served: false },
    ]);
    expect(await shard3.getJobState(deadId)).toBe('failed');
    const writes = later.leftovers.counted().find((q) => q.name === QUEUE.dynamoWrites)!;
    expect(await writes.getJobCounts('failed', 'waiting')).toEqual({ failed: 1, waiting: 0 });
  }, 30_000);
});
