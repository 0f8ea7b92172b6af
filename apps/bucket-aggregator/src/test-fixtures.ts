import { BucketStore } from '@tally/buckets';
import { closeQueues, createQueues, createRedisConnection, type RedisConnection, type StoreFence, type TallyQueues } from '@tally/queues';
import type { CompiledRules } from '@tally/schema';
import { startRedisCluster, testRedis, waitFor, type RedisClusterHandle, type RedisHandle } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import { DelayedError, UnrecoverableError, Worker, type Job, type JobsOptions, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { vi } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor } from './events.processor';

/** What the events processor and the sealer run on in a test: the queues and the BucketStore (prefix `t`) on one connection. */
export interface AggregatorRedis {
  /** A connection with no per-command retry limit, as BullMQ wants. */
  redis: Redis;
  queues: TallyQueues;
  buckets: BucketStore;
}

/**
 * In a test file: a redis-server of its own, with the queues and a BucketStore of `rules` on a connection to it handed
 * to `ready` before the file's tests; after them the queues close, the connection quits and the server stops.
 */
export function useAggregatorRedis(rules: CompiledRules, ready: (r: AggregatorRedis) => void): void {
  useRedis(
    (redis) => {
      const queues = createQueues(redis);
      ready({ redis, queues, buckets: new BucketStore({ redis, rules, prefix: 't' }) });
      return () => closeQueues(queues);
    },
    { connection: { maxRetriesPerRequest: null } },
  );
}

/** The writer's part for rows `pks` of `store`: each row's outbox acked at `at` (as if written), then the store's backlog published. */
export async function writeRows(buckets: BucketStore, store: string, pks: readonly string[], at: number): Promise<void> {
  for (const pk of pks) {
    const fields = (await buckets.readOutbox(store, pk)).entries.map((e) => e.field);
    await buckets.ackOutbox(store, pk, fields, at);
  }
  await buckets.publishBacklog(store, await buckets.storeBacklog(store), undefined, at);
}

/** Fails the next waiting job of `queue` for good (an unrecoverable error), as a dead letter lands; returns it. */
export async function failNext(redis: Redis, queue: Queue): Promise<{ id: string; store: string }> {
  const connection = redis.duplicate();
  const w = new Worker(queue.name, null, { connection, prefix: queue.opts.prefix, autorun: false });
  w.on('error', () => undefined);
  try {
    const token = 'failer';
    const job = (await w.getNextJob(token))!;
    await job.moveToFailed(new UnrecoverableError('permanent: test'), token, false);
    return { id: job.id!, store: (job.data as { store: string }).store };
  } finally {
    await w.close();
    await connection.quit();
  }
}

/** A Redis Cluster of 3 masters with a replica each, and the aggregator's connections to it. */
export interface ReplicatedCluster {
  cluster: RedisClusterHandle;
  /** The connection the aggregator's BucketStore uses. */
  data: RedisConnection;
  /** The connection its ReplicaFence sends its WAITs on. */
  waitRedis: RedisConnection;
  /** The replica of `master`, once its link to it is connected (`message` names it if it never is). */
  replicaOf(master: RedisHandle, message: string): Promise<RedisHandle>;
  /** SIGSTOPs `node` (it acknowledges nothing) until `resume`, or until `stop` if the test ends first. */
  pause(node: RedisHandle): void;
  resume(node: RedisHandle): void;
  /** Resumes a paused node, closes the connections and stops the cluster: for the test's `finally`. */
  stop(): Promise<void>;
}

export async function startReplicatedCluster(): Promise<ReplicatedCluster> {
  const cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  const target = { REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds };
  const data = createRedisConnection(target, { maxRetriesPerRequest: null });
  const waitRedis = createRedisConnection(target, { maxRetriesPerRequest: null });
  let paused: RedisHandle | undefined;
  return {
    cluster,
    data,
    waitRedis,
    replicaOf: (master, message) =>
      waitFor(
        async () => {
          for (const n of cluster.nodes) {
            const r = testRedis(n.url);
            const role = (await r.role().finally(() => r.disconnect())) as unknown[];
            if (role[0] === 'slave' && role[2] === master.port && role[3] === 'connected') return n;
          }
          return undefined;
        },
        { message },
      ),
    pause(node) {
      process.kill(node.pid, 'SIGSTOP');
      paused = node;
    },
    resume(node) {
      process.kill(node.pid, 'SIGCONT');
      paused = undefined;
    },
    async stop() {
      if (paused) process.kill(paused.pid, 'SIGCONT');
      data.disconnect();
      waitRedis.disconnect();
      await cluster.stop();
    },
  };
}

/** As much of a seal job for `shard` as the sealer reads: added at `timestamp`, due `opts.delay` later, as a job scheduler's. */
export const sealJob = (shard: number, timestamp: number, opts: JobsOptions = {}) => ({ data: { shard }, timestamp, opts }) as Job;

/** How an events job ended: completed (`applied` false for a duplicate), or delayed (to be retried). */
type JobOutcome = { outcome: 'completed'; applied: boolean } | { outcome: 'delayed' };

/**
 * Runs the events processor (every store in UTC, a dedupe window of 1 h, `replicated` its REDIS_WAIT_REPLICAS fence)
 * once on a job of `views` views of P1 for `store` (as much of a BullMQ job as it uses). The job's moveToDelayed and
 * the processor's metrics come with its outcome, for a test to check after a delay.
 */
export function runEventsJob(o: {
  buckets: BucketStore;
  rules: CompiledRules;
  store: string;
  batchId: string;
  views?: number;
  replicated?: StoreFence | undefined;
}) {
  const moveToDelayed = vi.fn(async () => {});
  const metrics = createAggregatorMetrics(new Registry());
  const run = eventsProcessor({
    buckets: o.buckets,
    rules: o.rules,
    timeZoneOf: async () => 'UTC',
    dedupeTtlSeconds: 3600,
    metrics,
    log: pino({ level: 'silent' }),
    replicated: o.replicated,
  });
  const job = {
    id: o.batchId,
    timestamp: Date.now(),
    attemptsStarted: 1,
    data: {
      batchId: o.batchId,
      store: o.store,
      receivedAt: Date.now(),
      events: Array.from({ length: o.views ?? 1 }, () => ({
        type: 'view',
        ts: Date.parse('2023-05-03T10:00:00Z'),
        dims: { product: 'P1' },
      })),
    },
    moveToDelayed,
  };
  const outcome: Promise<JobOutcome> = run(job as unknown as Job, 'token').then(
    (r) => ({ outcome: 'completed', applied: r.applied }),
    (err: unknown) => {
      if (!(err instanceof DelayedError)) throw err;
      return { outcome: 'delayed' };
    },
  );
  return { outcome, moveToDelayed, metrics };
}
