import { closeQueues, createQueues, QUEUE, queueFor, shardOfStore, type TallyQueues } from '@tally/queues';
import { describe, expect, it } from 'vitest';
import { runDlqCli } from './cli';
import { batch, expectShardedDeadLetters, failJobs, io, useDlqRedis } from './test-fixtures';

// QUEUE_SHARDS lowered: the failed jobs of the shards past it are dead letters still, listed, shown, replayed and
// purged like those of the shards it keeps (the shard of each job as its own number).

/** The queues of QUEUE_SHARDS=4 (before the change) and 2 (after it, the tool's). */
let old: TallyQueues;
let neu: TallyQueues;
const DAY = 86_400_000;

useDlqRedis((redis) => {
  old = createQueues(redis, { keyPrefix: 't', shards: 4 });
  neu = createQueues(redis, { keyPrefix: 't', shards: 2 });
  return async () => {
    await closeQueues(old);
    await closeQueues(neu);
  };
});

const storeIn = (shard: number) => Array.from({ length: 100 }, (_, i) => `SHOP${i}`).find((s) => shardOfStore(s, 4) === shard)!;
/** Events batches of `store`, failed once (attempts: 1) as a dead letter lands. */
const failBatches = (queue: Parameters<typeof failJobs>[0], store: string, ids: string[]) =>
  failJobs(
    queue,
    ids.map((id) => ({ data: batch(id, Date.now(), store), opts: { jobId: id } })),
    () => 'boom before the change',
  );

describe('failed jobs of shards past a lowered QUEUE_SHARDS', () => {
  it('are listed, shown, replayed (waiting on their shard again) and purged', async () => {
    const [s1, s3] = [storeIn(1), storeIn(3)];
    const q3 = queueFor(old, QUEUE.events, s3);
    await failBatches(queueFor(old, QUEUE.events, s1), s1, ['k1']);
    await failBatches(q3, s3, ['r3', 'p3']);
    const deps = { queues: neu, dedupeWindowMs: DAY };
    const shards: Array<[string, number]> = [
      ['k1', 1],
      ['p3', 3],
      ['r3', 3],
    ];
    await expectShardedDeadLetters(deps, shards, [q3, 'r3']);

    const purge = io();
    expect(await runDlqCli(['purge', 'events', '--reason', 'before the change', '--yes'], deps, purge.io)).toBe(0);
    expect(purge.out.at(-1)).toBe('purged 2 of 2 matching failed jobs in events');
    expect(purge.err).toEqual([]);
    expect(await q3.getJob('p3')).toBeUndefined();
    expect(await q3.getJobState('r3')).toBe('waiting');
  });

  it('with no shard past QUEUE_SHARDS holding jobs, only its own shards are read', async () => {
    const c = io();
    expect(await runDlqCli(['list', '--queue', 'events', '--json'], { queues: old, dedupeWindowMs: DAY }, c.io)).toBe(0);
    expect(JSON.parse(c.out.join('\n'))).toEqual([]);
    expect(c.err).toEqual([]);
  });
});
