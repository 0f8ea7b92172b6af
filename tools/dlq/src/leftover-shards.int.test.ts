import { closeQueues, createQueues, QUEUE, queueFor, shardOfStore, type TallyQueues } from '@tally/queues';
import { startRedis, waitFor, type RedisHandle } from '@tally/testing';
import { Worker, type Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runDlqCli } from './cli';

// QUEUE_SHARDS lowered: the failed jobs of the shards past it are dead letters still, listed, shown, replayed and
// purged like those of the shards it keeps (the shard of each job as its own number).

let redisServer: RedisHandle;
let redis: Redis;
/** The queues of QUEUE_SHARDS=4 (before the change) and 2 (after it, the tool's). */
let old: TallyQueues;
let neu: TallyQueues;
const DAY = 86_400_000;

beforeAll(async () => {
  redisServer = await startRedis();
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  old = createQueues(redis, { keyPrefix: 't', shards: 4 });
  neu = createQueues(redis, { keyPrefix: 't', shards: 2 });
});
afterAll(async () => {
  await closeQueues(old);
  await closeQueues(neu);
  await redis.quit();
  await redisServer.stop();
});
beforeEach(async () => {
  await redis.flushall();
});

const storeIn = (shard: number) => Array.from({ length: 100 }, (_, i) => `SHOP${i}`).find((s) => shardOfStore(s, 4) === shard)!;
const batch = (batchId: string, store: string) => ({
  batchId,
  store,
  receivedAt: Date.now(),
  source: 'http',
  events: [{ type: 'view', ts: Date.now(), dims: { product: 'P1' } }],
});

/** Adds the jobs to `queue` and fails each once (attempts: 1), as a dead letter lands; no worker is left. */
async function failJobs(queue: Queue, jobs: Array<{ id: string; data: object }>): Promise<void> {
  for (const j of jobs) await queue.add(queue.name, j.data, { jobId: j.id, attempts: 1 });
  const connection = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  const worker = new Worker(
    queue.name,
    async () => {
      throw new Error('boom before the change');
    },
    { connection, prefix: queue.opts.prefix },
  );
  try {
    await waitFor(async () => (await Promise.all(jobs.map((j) => queue.getJobState(j.id)))).every((s) => s === 'failed'));
  } finally {
    await worker.close();
    await connection.quit();
  }
}

const io = () => {
  const out: string[] = [];
  return { out, io: { out: (l: string) => out.push(l), err: (l: string) => out.push(l) } };
};

describe('failed jobs of shards past a lowered QUEUE_SHARDS', () => {
  it('are listed, shown, replayed (waiting on their shard again) and purged', async () => {
    const [s1, s3] = [storeIn(1), storeIn(3)];
    const q3 = queueFor(old, QUEUE.events, s3);
    await failJobs(queueFor(old, QUEUE.events, s1), [{ id: 'k1', data: batch('k1', s1) }]);
    await failJobs(q3, [
      { id: 'r3', data: batch('r3', s3) },
      { id: 'p3', data: batch('p3', s3) },
    ]);
    const deps = { queues: neu, dedupeWindowMs: DAY };

    const l = io();
    expect(await runDlqCli(['list', '--queue', 'events', '--json'], deps, l.io)).toBe(0);
    const listed = JSON.parse(l.out.join('\n')) as Array<{ id: string; shard: number }>;
    expect(listed.map((j) => [j.id, j.shard]).sort()).toEqual([
      ['k1', 1],
      ['p3', 3],
      ['r3', 3],
    ]);
    const t = io();
    expect(await runDlqCli(['list'], deps, t.io)).toBe(0);
    expect(t.out.at(-1)).toBe('events: 3 failed; seal: 0 failed; dynamo-writes: 0 failed; maintenance: 0 failed');

    const show = io();
    expect(await runDlqCli(['show', 'events', 'r3'], deps, show.io)).toBe(0);
    expect(show.out).toContain('shard:     3');

    const replay = io();
    expect(await runDlqCli(['replay', 'events', 'r3'], deps, replay.io)).toBe(0);
    expect(await q3.getJobState('r3')).toBe('waiting');

    const purge = io();
    expect(await runDlqCli(['purge', 'events', '--reason', 'before the change', '--yes'], deps, purge.io)).toBe(0);
    expect(purge.out.at(-1)).toBe('purged 2 of 2 matching failed jobs in events');
    expect(await q3.getJob('p3')).toBeUndefined();
    expect(await q3.getJobState('r3')).toBe('waiting');
  });

  it('with no shard past QUEUE_SHARDS holding jobs, only its own shards are read', async () => {
    const c = io();
    expect(await runDlqCli(['list', '--queue', 'events', '--json'], { queues: old, dedupeWindowMs: DAY }, c.io)).toBe(0);
    expect(JSON.parse(c.out.join('\n'))).toEqual([]);
  });
});
