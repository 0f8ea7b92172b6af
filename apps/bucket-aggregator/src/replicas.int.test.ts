import { BucketStore } from '@tally/buckets';
import { redisKeys } from '@tally/key-layout';
import { createRedisConnection, createReplicaFence, storeFence, type StoreFence } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { replicaInSync, waitFor, type RedisWithReplica } from '@tally/testing';
import { useRedisWithReplica } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it, vi } from 'vitest';
import { workFence } from './events.processor';
import { runEventsJob } from './test-fixtures';

// REDIS_WAIT_REPLICAS on the aggregator, against a real replica: an events job completes (and leaves its queue, which
// on a Redis Cluster may live on another master than the store's keys) only once the replica holds its apply.

const rules = compileRules(defaultRules);
const STORE = 'S';
let pair: RedisWithReplica;
const { connect, disconnectAfter } = useRedisWithReplica((p) => void (pair = p));

/** Runs the events processor once on a job of `views` views for STORE; a delayed job was moved to the delayed set and counted. */
async function process(buckets: BucketStore, batchId: string, views: number, replicated?: StoreFence) {
  const job = runEventsJob({ buckets, rules, store: STORE, batchId, views, replicated });
  const r = await job.outcome;
  if (r.outcome === 'delayed') {
    expect(job.moveToDelayed).toHaveBeenCalledOnce();
    // Counted for the TallyRedisReplicasBehind alert.
    expect((await job.metrics.batchWaits.get()).values).toEqual([{ value: 1, labels: { reason: 'replicas' } }]);
  }
  return r;
}

const views = async (redis: Redis, prefix: string) =>
  Number((await redis.hget(`${prefix}:{${STORE}}:b:${await redis.get(`${prefix}:{${STORE}}:epoch`)}:${STORE}`, '2023-123|v')) ?? 0);

describe('the aggregator with REDIS_WAIT_REPLICAS=1', () => {
  it('completes a job only once the replica holds its apply; else the job waits, and its retry (a duplicate) completes once it does', async () => {
    await replicaInSync(pair.replica.url);
    const m = connect(pair.master.url);
    const buckets = new BucketStore({ redis: m, rules, prefix: 'ra' });
    // A WAIT of up to 2 s: a replica that follows acknowledges well within it even on a loaded machine (300 ms was not
    // always enough under the whole suite); one that does not follow makes the job wait whatever the timeout.
    const fence = storeFence(createReplicaFence(connect(pair.master.url), 1, 2_000, [m]), redisKeys('ra'), 'the batch');
    const wait = vi.spyOn(fence, 'wait');

    // The replica keeps up: the job waits for it on the store's fence key (and its work-set shard's), and completes.
    expect(await process(buckets, 'b0', 2, fence)).toEqual({ outcome: 'completed', applied: true });
    expect(wait).toHaveBeenCalledWith(STORE, expect.any(Number), [workFence(buckets, STORE)]);
    expect(await m.pttl(redisKeys('ra').fence(STORE))).toBeGreaterThan(0);
    const replica = connect(pair.replica.url);
    expect(await views(replica, 'ra')).toBe(2);

    // The replica stops following (its link broke, or it lags): the apply lands on the master only, and the job
    // does not complete (it is delayed, to be retried), whereas a job that does not wait completes at once.
    await replica.replicaof('NO', 'ONE');
    expect(await process(buckets, 'b1', 3, fence)).toEqual({ outcome: 'delayed' });
    expect(await views(m, 'ra')).toBe(5);
    expect(await views(replica, 'ra')).toBe(2);
    expect(await process(buckets, 'c1', 1)).toEqual({ outcome: 'completed', applied: true });

    // The replica follows again: the retry finds the batch applied (a duplicate) and completes once the replica has it.
    await replica.replicaof('127.0.0.1', String(pair.master.port));
    await replicaInSync(pair.replica.url);
    await waitFor(async () => (await m.wait(1, 100)) === 1, { message: 'the replica acknowledging again' });
    expect(await process(buckets, 'b1', 3, fence)).toEqual({ outcome: 'completed', applied: false });
    expect(await views(replica, 'ra')).toBe(6);
  });

  it('waits when its Redis connection closed after its mark (a failover may have moved the connection)', async () => {
    const m = disconnectAfter(createRedisConnection({ REDIS_URL: pair.master.url }) as Redis);
    m.on('error', () => {});
    const buckets = new BucketStore({ redis: m, rules, prefix: 'rk' });
    const fence = storeFence(createReplicaFence(connect(pair.master.url), 1, 1_000, [m]), redisKeys('rk'), 'the batch');
    // Right after the apply, the server cuts the connection (as a failover behind one address does); it reconnects.
    const apply = buckets.apply.bind(buckets);
    vi.spyOn(buckets, 'apply').mockImplementationOnce(async (...args) => {
      const r = await apply(...args);
      const closed = new Promise((resolve) => m.once('close', resolve));
      await connect(pair.master.url).client('KILL', 'ID', String(await m.client('ID')));
      await closed;
      return r;
    });
    expect(await process(buckets, 'k0', 1, fence)).toEqual({ outcome: 'delayed' });
    expect(await process(buckets, 'k0', 1, fence)).toEqual({ outcome: 'completed', applied: false });
  });
});
