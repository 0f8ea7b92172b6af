import { replicaInSync, sleep, startRedisCluster, waitFor, type RedisClusterHandle } from '@tally/testing';
import type { Job } from 'bullmq';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createRedisConnection, type RedisConnection } from './connection';
import { QUEUE } from './names';
import { closeQueues, createQueues, type TallyQueues } from './queues';
import { QUEUE_SETTINGS } from './settings';
import { shardWorker } from './workers';

// The bucket-aggregator's sealer is a BullMQ job scheduler (`every` BUCKET_SECONDS) and a Worker of the `seal` queue,
// made as main.ts makes it (shardWorker, on a connection of createRedisConnection). On a Redis Cluster with a replica
// per master, the master serving the seal queue's slot is SIGKILLed and the cluster promotes its replica, six times:
// the ticks go on after each. Before workers.ts gave its Workers connections without ioredis' cluster ready check,
// the Worker stopped taking jobs after the first to fifth failover in every run (running, the scheduler's next job
// delayed past due for ever): BullMQ's watchdog ended its blocking connection and waited for a Cluster.connect() whose
// ready check failed (cluster_state:fail before the promotion), a promise ioredis never settles.

let cluster: RedisClusterHandle;
let connection: RedisConnection;
let queues: TallyQueues;
const BUCKET_MS = 1_000;
/** Each tick's job, and how late it ran after it was due (ms). */
const ticks: Array<{ id: string; lateMs: number }> = [];

const target = () => ({ REDIS_URL: 'redis://127.0.0.1', REDIS_CLUSTER_NODES: cluster.seeds });

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  connection = createRedisConnection(target(), { maxRetriesPerRequest: null });
  queues = createQueues(connection, { keyPrefix: 't', shards: 1 });
}, 120_000);
afterAll(async () => {
  if (queues) await closeQueues(queues);
  connection?.disconnect();
  await cluster?.stop();
});

it('the seal queue’s job scheduler keeps ticking after its master is SIGKILLed and the replica promoted, six times', async () => {
  // As the aggregator's main.ts: a Worker on a connection of its own, the app's lock, then the scheduler.
  const workerConnection = createRedisConnection(target(), { maxRetriesPerRequest: null });
  const seal = queues[QUEUE.seal];
  const worker = shardWorker(
    QUEUE.seal,
    async (job: Job) => void ticks.push({ id: job.id!, lateMs: Date.now() - (job.timestamp + (job.opts.delay ?? 0)) }),
    seal.opts.prefix!,
    { connection: workerConnection, concurrency: 1, lockMs: 1_500 },
  );
  const errors: string[] = [];
  worker.on('error', (err) => void errors.push(err.message));
  try {
    await seal.upsertJobScheduler(
      'sealer-0',
      { every: BUCKET_MS },
      { name: 'seal', data: { shard: 0 }, opts: QUEUE_SETTINGS[QUEUE.seal].jobs },
    );
    await waitFor(() => ticks.length >= 3, { timeoutMs: 20_000, message: 'the first ticks' });
    for (let round = 1; round <= 6; round++) {
      const victim = await cluster.masterOf(seal.opts.prefix!);
      const before = ticks.length;
      await victim.kill('SIGKILL');
      await waitFor(async () => (await cluster.masterOf(seal.opts.prefix!)) !== victim, {
        timeoutMs: 60_000,
        intervalMs: 200,
        message: 'the replica promoted',
      });
      await victim.restart();
      await cluster.waitHealthy(60_000);
      await replicaInSync(victim.url);
      // The ticks resume: a few more than there were before the SIGKILL (the bound only fails a test that hangs).
      const resumed = await waitFor(() => ticks.length >= before + 3, { timeoutMs: 30_000, message: `ticks after failover ${round}` }).then(
        () => true,
        () => false,
      );
      const late = ticks.slice(before);
      console.log(
        `scheduler failover: round ${round}: master :${victim.port} SIGKILLed; ticks ${before} -> ${ticks.length}, ` +
          `the latest of them ${Math.max(0, ...late.map((t) => t.lateMs))} ms after it was due; ` +
          `counts ${JSON.stringify(await seal.getJobCounts())}; worker running ${worker.isRunning()}; errors ${JSON.stringify(errors.slice(-3))}`,
      );
      expect(resumed).toBe(true);
      await sleep(1_000);
    }
  } finally {
    await worker.close(true);
    workerConnection.disconnect();
  }
}, 400_000);
