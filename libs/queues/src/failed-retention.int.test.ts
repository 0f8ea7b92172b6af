import { useRedis } from '@tally/testing/vitest';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { FAILED_REMOVED_PER_LOOK, failedRetentionMs, LEFTOVER_LOOK_MS, LeftoverQueueShards } from './leftover-shards';
import { QUEUE, QUEUE_NAMES } from './names';
import { closeQueues, createQueues, queueShards, type TallyQueues } from './queues';

// Failed jobs are kept 14 days (removeOnFail's age), but BullMQ trims a failed set by age only when another job of the
// same queue shard fails: the worker apps' 5-minute look (LeftoverQueueShards) removes the older ones.

const DAY = 86_400_000;
const log = { warn: () => undefined, info: () => undefined };
let redis: Redis;
let cleanups: Array<() => Promise<unknown>> = [];
useRedis((r) => void (redis = r), { connection: { maxRetriesPerRequest: null }, flushEachTest: true });
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

function queuesOf(shards: number): TallyQueues {
  const queues = createQueues(redis, { keyPrefix: 't', shards });
  cleanups.push(() => closeQueues(queues));
  return queues;
}

function looker(queues: TallyQueues, now: () => number): LeftoverQueueShards {
  const leftovers = new LeftoverQueueShards({ queues, log, now });
  cleanups.push(() => leftovers.close());
  return leftovers;
}

/** Adds job `id` (a payload of events' size) to `q` and fails it for good, as a worker would. */
async function fail(q: Queue, id: string): Promise<void> {
  await q.add(q.name, { big: 'x'.repeat(50_000) }, { jobId: id });
  const connection = redis.duplicate();
  const w = new Worker(q.name, null, { connection, prefix: q.opts.prefix, autorun: false });
  w.on('error', () => undefined);
  try {
    const job = (await w.getNextJob('tok'))!;
    expect(job.id).toBe(id);
    await job.moveToFailed(new UnrecoverableError('permanent'), 'tok', false);
  } finally {
    await w.close();
    await connection.quit();
  }
}

/** Moves a failed job's finish `days` back, as the clock would have (finishedOn and its score in the failed set). */
async function age(q: Queue, id: string, days: number): Promise<void> {
  const at = Date.now() - days * DAY;
  await redis.hset(q.toKey(id), 'finishedOn', String(at));
  await redis.zadd(q.toKey('failed'), String(at), id);
}

const failedIds = async (q: Queue) => (await q.getRanges(['failed'], 0, -1, true)).sort();
/** Calls of `command` the server has run so far. */
const calls = async (command: string) =>
  Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(await redis.info('commandstats'))?.[1] ?? 0);

describe('failed jobs past their retention', () => {
  it('every queue keeps its failed jobs 14 days', () => {
    for (const name of QUEUE_NAMES) expect(failedRetentionMs(name)).toBe(14 * DAY);
  });

  it('are removed from every queue shard, a leftover one too, at a look, with no other job failing', async () => {
    const queues = queuesOf(2);
    const shards = [
      queues[QUEUE.events],
      queueShards(queues, QUEUE.dynamoWrites)[1]!,
      queues[QUEUE.seal],
      queues[QUEUE.maintenance],
      queueShards(queuesOf(4), QUEUE.events)[3]!, // past QUEUE_SHARDS=2
    ];
    for (const q of shards) {
      await fail(q, 'old');
      await fail(q, 'recent');
      // 15 and 13 days later, nothing else has failed on the shard: BullMQ trimmed nothing.
      await age(q, 'old', 15);
      await age(q, 'recent', 13);
    }
    expect(await failedIds(shards[0]!)).toEqual(['old', 'recent']);
    await looker(queues, Date.now).check();
    for (const q of shards) {
      expect(await failedIds(q)).toEqual(['recent']);
      expect(await redis.exists(q.toKey('old'))).toBe(0);
    }
  }, 30_000);

  it('by the checks’ clock, at most FAILED_REMOVED_PER_LOOK a shard per look, and nothing written while none is past it', async () => {
    const queues = queuesOf(1);
    const q = queues[QUEUE.dynamoWrites];
    await fail(q, 'real');
    let now = Date.now();
    const leftovers = looker(queues, () => now);
    const [evals, xadds] = [await calls('evalsha'), await calls('xadd')];
    await leftovers.check();
    expect([await calls('evalsha'), await calls('xadd')]).toEqual([evals, xadds]);
    expect(await failedIds(q)).toEqual(['real']);
    // More dead letters than a look removes (ids in the failed set, as a flood of failures leaves them).
    const at = now - 1000;
    for (let i = 0; i < FAILED_REMOVED_PER_LOOK + 4; i++) await redis.zadd(q.toKey('failed'), String(at), `flood-${i}`);
    now += 14 * DAY;
    await leftovers.check();
    expect(await q.getFailedCount()).toBe(5);
    now += LEFTOVER_LOOK_MS - 1;
    await leftovers.check(); // not yet a look
    expect(await q.getFailedCount()).toBe(5);
    now += 1;
    await leftovers.check();
    expect(await q.getFailedCount()).toBe(0);
  }, 30_000);
});
