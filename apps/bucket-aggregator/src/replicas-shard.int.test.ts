import { BucketStore } from '@tally/buckets';
import { redisKeys } from '@tally/key-layout';
import { createReplicaFence, storeFence, type StoreFence } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { replicaInSync, waitFor, type RedisHandle } from '@tally/testing';
import { useRedisWithReplica } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it, vi } from 'vitest';
import { workFence } from './events.processor';
import { runEventsJob, startReplicatedCluster } from './test-fixtures';

// REDIS_WAIT_REPLICAS on the aggregator covers the store's work-set registration too: on a Redis Cluster the work-set
// shard's keys (REGISTER) live on another master than the store's, and a failover of that master must not lose the
// registration of a batch whose job completed (the sealer would never visit the store's open bucket).

const rules = compileRules(defaultRules);
const SHARDS = 8;
let master: RedisHandle;
let replica: RedisHandle;
const { connect } = useRedisWithReplica((pair) => void ({ master, replica } = pair));

/** How many WAITs the server has run since the last CONFIG RESETSTAT. */
const waits = async (r: Redis) => Number(/^cmdstat_wait:calls=(\d+)/m.exec(await r.info('commandstats'))?.[1] ?? 0);

/** Runs the events processor once on a job of one view for `store`, waiting for replicas with `replicated`. */
const runJob = (buckets: BucketStore, store: string, batchId: string, replicated: StoreFence) =>
  runEventsJob({ buckets, rules, store, batchId, replicated }).outcome;

describe("the aggregator's wait for replicas on the store's work-set shard", () => {
  it('on one Redis, covers the apply and the registration with one WAIT', async () => {
    await replicaInSync(replica.url);
    const m = connect(master.url);
    const buckets = new BucketStore({ redis: m, rules, prefix: 'ws', shards: SHARDS });
    const replicaFence = createReplicaFence(connect(master.url), 1, 2_000, [m]);
    const wait = vi.spyOn(replicaFence, 'wait');
    const fence = storeFence(replicaFence, redisKeys('ws'), 'the batch');
    await m.config('RESETSTAT');
    expect(await runJob(buckets, 'S', 'b0', fence)).toEqual({ outcome: 'completed', applied: true });
    // Both keys given, one fence sent: any key of one server fences every write it made.
    expect(wait).toHaveBeenCalledWith([redisKeys('ws').fence('S'), workFence(buckets, 'S')], 'the batch', expect.any(Number));
    expect(await waits(m)).toBe(1);
  });

  it("on a Redis Cluster, completes a job only once the work-set shard's master's replica holds the registration", async () => {
    const c = await startReplicatedCluster();
    try {
      const buckets = new BucketStore({ redis: c.data, rules, prefix: 'ws', shards: SHARDS });
      const keys = redisKeys('ws');
      // A store whose work-set shard is on another master than the store's own keys.
      let store = '';
      let shardMaster!: RedisHandle;
      for (let i = 0; !store; i++) {
        const s = `S${i}`;
        const [own, shard] = await Promise.all([c.cluster.masterOf(keys.fence(s)), c.cluster.masterOf(workFence(buckets, s))]);
        if (own !== shard) [store, shardMaster] = [s, shard];
      }
      const heir = await c.replicaOf(shardMaster, "the shard master's replica connected");
      const fence = storeFence(createReplicaFence(c.waitRedis, 1, 1_000, [c.data]), keys, 'the batch');
      await expect(runJob(buckets, store, 'b0', fence)).resolves.toEqual({ outcome: 'completed', applied: true });

      // The shard master's replica stops acknowledging (SIGSTOP): the store's master's replica holds the apply, yet
      // the job waits (delayed), since a failover of the shard's master could lose the store's registration.
      c.pause(heir);
      expect(await runJob(buckets, store, 'b1', fence)).toEqual({ outcome: 'delayed' });
      c.resume(heir);
      // It follows again: the retry finds the batch applied, registers the store again, and completes.
      await waitFor(async () => (await runJob(buckets, store, 'b1', fence)).outcome === 'completed', {
        timeoutMs: 20_000,
        message: 'the retry completing once the replica acknowledges again',
      });
    } finally {
      await c.stop();
    }
  }, 120_000);
});
