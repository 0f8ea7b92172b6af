import { BucketStore } from '@tally/buckets';
import { keySlot } from '@tally/key-layout';
import {
  closeQueues,
  createQueues,
  createRedisConnection,
  enqueue,
  QUEUE,
  shardWorker,
  type RedisConnection,
  type TallyQueues,
} from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { startRedisCluster, testRedis, waitFor, type RedisClusterHandle, type RedisHandle } from '@tally/testing';
import type { Job, Worker } from 'bullmq';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAggregatorMetrics, type AggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor } from './events.processor';

// A Redis Cluster slot left open by a reshard that stopped half way (redis-cli --cluster reshard interrupted, or a
// big store's slot that takes minutes to migrate): every script that creates a key there is answered TRYAGAIN (ioredis
// gives up after its redirections: "Too many Cluster redirections") until the slot is closed. An events batch the
// collector answered 202 for waits meanwhile without spending its job's attempts (it spent one per try, and after the
// events queue's 10 it was in the failed set, counted only once an operator replayed it), and is applied once the
// slot is closed.

const rules = compileRules(defaultRules);
const log = pino({ level: 'silent' });

let cluster: RedisClusterHandle;
let redis: RedisConnection;
let queues: TallyQueues;
let buckets: BucketStore;
let metrics: AggregatorMetrics;
let worker: Worker;

/** Runs `fn` on a connection of its own to `node`. */
const on = async <T>(node: RedisHandle, fn: (r: ReturnType<typeof testRedis>) => Promise<T>): Promise<T> => {
  const r = testRedis(node.url);
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
};

/** How each job ended, by the worker's events (completed jobs are removed at once), and its failed tries. */
const ends = new Map<string, { state: 'completed' | 'failed'; reason?: string }>();
const tries = new Map<string, number>();

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
  const target = { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds };
  redis = createRedisConnection(target, { maxRetriesPerRequest: null });
  queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
  buckets = new BucketStore({ redis, rules, prefix: 't' });
  metrics = createAggregatorMetrics(new Registry());
  const processor = eventsProcessor({ buckets, rules, timeZoneOf: async () => 'UTC', dedupeTtlSeconds: 3600, metrics, log });
  worker = shardWorker(QUEUE.events, processor, queues[QUEUE.events].opts.prefix!, {
    connection: createRedisConnection(target, { maxRetriesPerRequest: null }),
    concurrency: 1,
    lockMs: 5_000,
  });
  worker.on('error', () => undefined);
  worker.on('completed', (job: Job) => void ends.set(job.id!, { state: 'completed' }));
  // A wait (DelayedError) is no failed try: BullMQ emits `failed` only for a try that spent an attempt.
  worker.on('failed', (job: Job | undefined, err: Error) => {
    if (!job) return;
    tries.set(job.id!, (tries.get(job.id!) ?? 0) + 1);
    if (job.finishedOn) ends.set(job.id!, { state: 'failed', reason: err.message });
  });
}, 120_000);
afterAll(async () => {
  await worker?.close(true);
  if (queues) await closeQueues(queues);
  redis?.disconnect();
  await cluster?.stop();
});

const batch = (batchId: string, store: string, views: number) => ({
  batchId,
  store,
  receivedAt: Date.now(),
  events: Array.from({ length: views }, () => ({ type: 'view', ts: Date.now() - 60_000, dims: { product: 'P1' } })),
});

const redisWaits = async () => (await metrics.batchWaits.get()).values.find((v) => v.labels['reason'] === 'redis')?.value ?? 0;

it('a batch accepted while its store’s slot is left half migrated waits without spending attempts, and counts once the slot is closed', async () => {
  const queueMaster = await cluster.masterOf(`{t:events:0}`);
  // A store whose slot is on another master than the events queue's shard.
  let store = '';
  for (let i = 0; !store; i++) if ((await cluster.masterOf(`t:{S${i}}:`)) !== queueMaster) store = `S${i}`;
  const slot = keySlot(`t:{${store}}:`);
  const source = await cluster.masterOf(`t:{${store}}:`);
  const target = cluster.nodes.find((n) => n !== source && n !== queueMaster)!;

  // The store has counted before: its keys exist on its master.
  await enqueue(queues, QUEUE.events, batch('b-1', store, 2), { jobId: 'b-1' });
  expect(await waitFor(() => ends.get('b-1'), { timeoutMs: 30_000, message: 'b-1 done' })).toEqual({ state: 'completed' });

  // A reshard of the store's slot stops half way: one of its keys moved, the rest not, the slot left open.
  const [sourceId, targetId] = await Promise.all([source, target].map((n) => on(n, (r) => r.cluster('MYID') as Promise<string>)));
  await on(target, (r) => r.cluster('SETSLOT', slot, 'IMPORTING', sourceId!));
  await on(source, (r) => r.cluster('SETSLOT', slot, 'MIGRATING', targetId!));
  const [first] = (await on(source, (r) => r.cluster('GETKEYSINSLOT', slot, 1))) as string[];
  await on(source, (r) => r.migrate('127.0.0.1', target.port, '', 0, 5_000, 'KEYS', first!));

  // A batch the collector answered 202 for meanwhile: it is tried again and again (three waits), spending no attempt.
  await enqueue(queues, QUEUE.events, batch('b-2', store, 3), { jobId: 'b-2' });
  await waitFor(async () => (tries.get('b-2') ?? 0) > 0 || (await redisWaits()) >= 3, {
    timeoutMs: 120_000,
    message: 'b-2 tried three times, or failed',
  });
  expect({ failedTries: tries.get('b-2') ?? 0, end: ends.get('b-2') }).toEqual({ failedTries: 0, end: undefined });
  expect(await redisWaits()).toBeGreaterThanOrEqual(3);

  // The operator closes the slot (redis-cli --cluster fix finishes the move): every key to the target.
  await on(source, async (r) => {
    for (
      let keys = (await r.cluster('GETKEYSINSLOT', slot, 100)) as string[];
      keys.length;
      keys = (await r.cluster('GETKEYSINSLOT', slot, 100)) as string[]
    )
      await r.migrate('127.0.0.1', target.port, '', 0, 5_000, 'KEYS', ...keys);
  });
  for (const n of [target, source, ...cluster.nodes.filter((x) => x !== source && x !== target)])
    await on(n, (r) => r.cluster('SETSLOT', slot, 'NODE', targetId!));

  // Its next try applies it: counted once, without a replay.
  expect(await waitFor(() => ends.get('b-2'), { timeoutMs: 120_000, message: 'b-2 done' })).toEqual({ state: 'completed' });
  expect(tries.get('b-2') ?? 0).toBe(0);
  const [row] = await buckets.snapshot(store, [store]);
  const views = row!.entries.filter((e) => e.metric === rules.attrMetric('ViewCount')).reduce((s, e) => s + e.value, 0n);
  expect(views).toBe(5n);
}, 360_000);
