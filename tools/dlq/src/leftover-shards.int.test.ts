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

  it('a dynamo-writes job there is discarded, not replayed, and the output says so and why', async () => {
    // No worker runs a flush of a shard past QUEUE_SHARDS: the aggregators remove such jobs as redundant (their row is
    // flushed from its own shard). A replay that set one waiting told the operator "replayed" of a job dropped later.
    const s3 = storeIn(3);
    const q3 = queueFor(old, QUEUE.dynamoWrites, s3);
    const flush = (id: string) => ({ data: { store: s3, pk: `${s3}#product#${id}` }, opts: { jobId: id } });
    await failJobs(q3, [flush('f1'), flush('f2'), flush('f3')], () => 'throttled before the change');
    const own = queueFor(neu, QUEUE.dynamoWrites, s3);
    await failJobs(own, [flush('f4')], () => 'throttled after the change');
    const deps = { queues: neu, dedupeWindowMs: DAY };
    const why = 'shard 3 is past QUEUE_SHARDS (2): no worker runs it, its row is flushed from its own shard';

    const dry = io();
    expect(await runDlqCli(['replay', 'dynamo-writes', 'f1', '--dry-run'], deps, dry.io)).toBe(0);
    expect(dry.out).toEqual([`dry run: would discard job f1 in dynamo-writes (${why})`]);
    expect(await q3.getJobState('f1')).toBe('failed');

    const one = io();
    expect(await runDlqCli(['replay', 'dynamo-writes', 'f1'], deps, one.io)).toBe(0);
    expect(one.out).toEqual([`discarded job f1 in dynamo-writes (${why})`]);
    expect(one.err).toEqual([]);
    expect(await q3.getJob('f1')).toBeUndefined();

    const dryBulk = io();
    expect(await runDlqCli(['replay', 'dynamo-writes', '--all', '--dry-run'], deps, dryBulk.io)).toBe(0);
    expect(dryBulk.out.slice(-3)).toEqual([
      `would discard f2: ${why}`,
      `would discard f3: ${why}`,
      'dry run: would replay 1 of 3 matching failed jobs in dynamo-writes (2 would be discarded)',
    ]);

    const bulk = io();
    expect(await runDlqCli(['replay', 'dynamo-writes', '--all'], deps, bulk.io)).toBe(0);
    expect(bulk.out).toEqual([
      `discarded f2: ${why}`,
      `discarded f3: ${why}`,
      'replayed 1 of 3 matching failed jobs in dynamo-writes (2 discarded)',
    ]);
    expect(bulk.err).toEqual([]);
    expect(await q3.getJobCounts()).toMatchObject({ waiting: 0, failed: 0 });
    expect(await own.getJobState('f4')).toBe('waiting');
  });

  it('with no shard past QUEUE_SHARDS holding jobs, only its own shards are read', async () => {
    const c = io();
    expect(await runDlqCli(['list', '--queue', 'events', '--json'], { queues: old, dedupeWindowMs: DAY }, c.io)).toBe(0);
    expect(JSON.parse(c.out.join('\n'))).toEqual([]);
    expect(c.err).toEqual([]);
  });
});
