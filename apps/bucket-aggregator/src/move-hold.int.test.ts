import { BucketStore, type MoveHold } from '@tally/buckets';
import { redisKeys, storeShard, WORK_SUFFIX } from '@tally/key-layout';
import { createReplicaFence, ReplicasBehindError, storeFence, type ReplicaFence } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { replicaInSync, waitFor, type RedisHandle } from '@tally/testing';
import { useRedisWithReplica } from '@tally/testing/vitest';
import type { Cluster, Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { workFence } from './events.processor';
import { sealProcessor } from './seal.processor';
import { sealJob, startReplicatedCluster } from './test-fixtures';

// REDIS_WAIT_REPLICAS and the sealer's moves of stores between work-set shards (QUEUE_SHARDS changed): a store leaves
// its old shard (LEAVE_SHARD) only once replicas hold its REGISTER in its own (on a Redis Cluster another master),
// so a failover of that master that lost the REGISTER cannot leave the store in no shard.

const rules = compileRules(defaultRules);
let master: RedisHandle;
let replica: RedisHandle;
const { connect } = useRedisWithReplica((pair) => void ({ master, replica } = pair));
const STORES = Array.from({ length: 40 }, (_, i) => `S${i}`);
const key = (shard: number) => `t:{t:w${shard}}:${WORK_SUFFIX.active}`;

/** The work-set shards (0 to 7) whose active set holds the store. */
async function shardsHolding(r: Redis | Cluster, s: string): Promise<number[]> {
  const held: number[] = [];
  for (let shard = 0; shard < 8; shard++) if ((await r.zscore(key(shard), s)) !== null) held.push(shard);
  return held;
}

/** The hold the aggregator gives its sealer (main.ts): the ReplicaFence of its REDIS_WAIT_REPLICAS on the shards' fence keys. */
const holdOf = (fence: ReplicaFence): MoveHold => ({
  mark: fence.mark,
  wait: (keys, mark) => fence.wait(keys, 'the moved stores’ registrations', mark),
});

/** A hold that records, at its mark and at its wait, which shards hold `watched`, and fails while `failing`. */
function spyHold(r: Redis, watched: string) {
  const calls: Array<{ at: 'mark' | 'wait'; held: number[]; keys?: readonly string[] }> = [];
  const state = { failing: false };
  const pending: Array<Promise<void>> = [];
  const hold: MoveHold = {
    mark: () => {
      // mark() is synchronous: read what the shards hold right away, before the REGISTERs are sent.
      const entry: (typeof calls)[number] = { at: 'mark', held: [] };
      calls.push(entry);
      pending.push(shardsHolding(r, watched).then((held) => void (entry.held = held)));
      return 7;
    },
    wait: async (keys, mark) => {
      expect(mark).toBe(7);
      calls.push({ at: 'wait', held: await shardsHolding(r, watched), keys });
      if (state.failing) throw new ReplicasBehindError('0 of 1 Redis replicas acknowledged the moved stores’ registrations within 10 ms');
    },
  };
  return { hold, calls, state, settled: () => Promise.all(pending) };
}

describe('a move of stores between work-set shards with a hold (REDIS_WAIT_REPLICAS)', () => {
  let m: Redis;
  beforeEach(async () => {
    m = connect(master.url);
    await m.flushall();
  });

  it('waits after the REGISTERs, on the fence keys of the shards they wrote, before the LEAVE_SHARD; a failed wait skips the LEAVE_SHARD', async () => {
    const old = new BucketStore({ redis: m, rules, prefix: 't', shards: 4 });
    const neu = new BucketStore({ redis: m, rules, prefix: 't', shards: 3 });
    const strangers = STORES.filter((s) => storeShard(s, 4) === 1 && storeShard(s, 3) !== 1);
    expect(new Set(strangers.map((s) => neu.shardOf(s))).size).toBe(2);
    for (const s of strangers) await old.registerStore(s, 9_000);
    const marks = (await old.activeStores(1)).filter((a) => strangers.includes(a.store));
    const watched = strangers[0]!;

    const failing = spyHold(m, watched);
    failing.state.failing = true;
    const r = await neu.moveStores(1, marks, 1_000, { hold: failing.hold });
    await failing.settled();
    expect(r.moved).toBe(0);
    expect(r.errors.map((e) => e.name)).toEqual(['ReplicasBehindError']);
    // Marked before the REGISTERs (the store in its old shard only), waited after them (in both), on each new shard's
    // fence key once: the LEAVE_SHARD skipped, every store stays in both (harmless: moved again at a later tick).
    expect(failing.calls.map((c) => [c.at, c.held])).toEqual([
      ['mark', [1]],
      ['wait', [1, neu.shardOf(watched)].sort()],
    ]);
    const fences = [...new Set(strangers.map((s) => workFence(neu, s)))].sort();
    expect([...failing.calls[1]!.keys!].sort()).toEqual(fences);
    for (const s of strangers) expect(await shardsHolding(m, s)).toEqual([1, neu.shardOf(s)].sort());

    // Moved again with the wait answered: each store ends in its own shard only.
    const passing = spyHold(m, watched);
    expect(await neu.moveStores(1, marks, 1_000, { hold: passing.hold })).toEqual({ moved: strangers.length, errors: [] });
    for (const s of strangers) expect(await shardsHolding(m, s)).toEqual([neu.shardOf(s)]);
  });

  it('drainShard: a failed wait leaves the shard past QUEUE_SHARDS whole (its stores in both shards), drained by the next call', async () => {
    const old = new BucketStore({ redis: m, rules, prefix: 't', shards: 4 });
    const neu = new BucketStore({ redis: m, rules, prefix: 't', shards: 2 });
    const removed = STORES.filter((s) => storeShard(s, 4) === 3);
    for (const s of removed) await old.registerStore(s, 9_000);
    const failing = spyHold(m, removed[0]!);
    failing.state.failing = true;
    const r = await neu.drainShard(3, 1_000, undefined, { hold: failing.hold });
    expect([r.moved, r.empty, r.errors.length]).toEqual([0, false, 1]);
    for (const s of removed) expect(await shardsHolding(m, s)).toEqual([neu.shardOf(s), 3].sort());
    expect(await neu.drainShard(3, 1_000, undefined, { hold: spyHold(m, removed[0]!).hold })).toEqual({
      moved: removed.length,
      empty: true,
      errors: [],
    });
    for (const s of removed) expect(await shardsHolding(m, s)).toEqual([neu.shardOf(s)]);
  });

  it('the sealer waits with its hold for both kinds of move (a shard past QUEUE_SHARDS, and strangers of the shard it ticks), with one WAIT on one server', async () => {
    await replicaInSync(replica.url);
    const old = new BucketStore({ redis: m, rules, prefix: 't', shards: 4 });
    const neu = new BucketStore({ redis: m, rules, prefix: 't', shards: 3 });
    for (const s of STORES) await old.registerStore(s, 0);
    const fence = storeFence(createReplicaFence(connect(master.url), 1, 2_000, [m]), redisKeys('t'), 'the batch').fence;
    const waits: Array<readonly string[]> = [];
    const hold = holdOf(fence);
    const seal = sealProcessor({
      buckets: neu,
      queues: { 'dynamo-writes': undefined as never },
      bucketMs: 1000,
      metrics: createAggregatorMetrics(new Registry()),
      log: pino({ level: 'silent' }),
      now: () => 5_000,
      hold: { mark: hold.mark, wait: (keys, mark) => (waits.push(keys), hold.wait(keys, mark)) },
    });
    await m.config('RESETSTAT');
    // Shard 0's tick drains shard 3 (past QUEUE_SHARDS) and moves shard 0's strangers; shards 1 and 2 move theirs.
    let moved = 0;
    for (let shard = 0; shard < 3; shard++) moved += (await seal(sealJob(shard, 5_000))).moved;
    const strangers = (shard: number) => STORES.filter((s) => storeShard(s, 4) === shard && storeShard(s, 3) !== shard);
    expect(moved).toBe(STORES.filter((s) => storeShard(s, 4) !== storeShard(s, 3)).length);
    // No store is left in a shard not its own (the stores visited had nothing to write: retired from their own).
    for (const s of STORES) expect((await shardsHolding(m, s)).filter((w) => w !== neu.shardOf(s))).toEqual([]);
    // One wait per move (the drain of shard 3, then each shard's strangers), each one WAIT on this one server.
    const moves = 1 + [0, 1, 2].filter((shard) => strangers(shard).length > 0).length;
    expect(waits.length).toBe(moves);
    expect(Number(/^cmdstat_wait:calls=(\d+)/m.exec(await m.info('commandstats'))?.[1])).toBe(moves);
  });

  it('on a Redis Cluster, keeps a store in its old shard while the replica of its new shard’s master does not hold its REGISTER', async () => {
    const c = await startReplicatedCluster();
    try {
      const old = new BucketStore({ redis: c.data, rules, prefix: 't', shards: 4 });
      const neu = new BucketStore({ redis: c.data, rules, prefix: 't', shards: 2 });
      // A store of the removed shard 3 whose own shard is on another master than shard 3.
      let store = '';
      let newMaster!: RedisHandle;
      for (const s of STORES.filter((x) => storeShard(x, 4) === 3)) {
        const [from, to] = await Promise.all([c.cluster.masterOf(key(3)), c.cluster.masterOf(workFence(neu, s))]);
        if (from !== to) [store, newMaster] = [s, to];
        if (store) break;
      }
      expect(store).not.toBe('');
      await old.registerStore(store, 0);
      const heir = await c.replicaOf(newMaster, "the new shard master's replica connected");
      const hold = holdOf(createReplicaFence(c.waitRedis, 1, 500, [c.data]));
      // The new shard's replica acknowledges nothing (SIGSTOP): the store is registered there, and stays in shard 3.
      c.pause(heir);
      const r = await neu.drainShard(3, 1_000, undefined, { hold });
      expect([r.moved, r.empty, r.errors.map((e) => e.name)]).toEqual([0, false, ['ReplicasBehindError']]);
      expect(await shardsHolding(c.data, store)).toEqual([neu.shardOf(store), 3].sort());
      c.resume(heir);
      // The replica follows again: the next drain moves it.
      await waitFor(async () => (await neu.drainShard(3, 1_000, undefined, { hold })).empty, {
        timeoutMs: 20_000,
        message: 'the drain completing once the replica acknowledges again',
      });
      expect(await shardsHolding(c.data, store)).toEqual([neu.shardOf(store)]);
    } finally {
      await c.stop();
    }
  }, 120_000);
});
