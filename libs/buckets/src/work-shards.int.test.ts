import { storeShard, WORK_SUFFIX } from '@tally/key-layout';
import { startRedisCluster } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import { Cluster, type Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BucketStore } from './bucket-store';
import { testRules } from './test-store';

/**
 * Stores registered in a work-set shard that is not theirs (QUEUE_SHARDS changed) move into their own: REGISTER
 * there, then LEAVE_SHARD here while their mark is unchanged; a shard past QUEUE_SHARDS is drained and its keys go.
 */
let redis: Redis;
useRedis((r) => void (redis = r), { flushEachTest: true });

const store = (r: Redis | Cluster, shards: number) => new BucketStore({ redis: r, rules: testRules, prefix: 't', shards });
const key = (shard: number, suffix: string) => `t:{t:w${shard}}:${suffix}`;
const STORES = Array.from({ length: 40 }, (_, i) => `S${i}`);
const backlog = (rows: number) => ({ rows, entries: rows, oldestDirty: 5, oldestUnfolded: 7 });

/** The work-set shards (0 to 7) whose active set holds the store. */
async function shardsHolding(r: Redis | Cluster, s: string): Promise<number[]> {
  const held: number[] = [];
  for (let shard = 0; shard < 8; shard++) if ((await r.zscore(key(shard, WORK_SUFFIX.active), s)) !== null) held.push(shard);
  return held;
}

describe('marks', () => {
  it('never repeat: a store retired and registered again gets a mark it never had, so a move holding its old one keeps it', async () => {
    const old = store(redis, 4);
    const neu = store(redis, 2);
    const x = STORES.find((s) => storeShard(s, 4) === 3)!;
    await old.registerStore(x, 9_000);
    const [{ mark }] = (await old.activeStores(3)) as [{ store: string; mark: string }];
    // A drain of shard 3 read that mark; meanwhile the store is retired there (nothing left) and an apply of a process
    // still on QUEUE_SHARDS=4 registers it again.
    expect(await old.publishBacklog(x, { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined }, mark)).toBe('retired');
    await old.registerStore(x, 9_000);
    const [{ mark: again }] = (await old.activeStores(3)) as [{ store: string; mark: string }];
    expect(again).not.toBe(mark);
    // The move under the mark it read must not take the store out of shard 3: it would be in no shard once the move's
    // own registration in shard 0 or 1 is retired there.
    expect(await neu.moveStores(3, [{ store: x, mark }], 1_000)).toEqual({ moved: 0, errors: [] });
    expect(await shardsHolding(redis, x)).toContain(3);
    // Each registration gives a new mark, the counter never deleted with the shard's other keys.
    await old.registerStore(x, 9_000);
    expect(Number((await old.activeStores(3))[0]!.mark)).toBeGreaterThan(Number(again));
  });
});

describe('moveStores', () => {
  it('moves stores into their own shard, due at once there, with their stats out of the totals of the shard they leave', async () => {
    const old = store(redis, 4);
    const neu = store(redis, 3);
    const strangers = STORES.filter((s) => storeShard(s, 4) === 1 && storeShard(s, 3) !== 1);
    const stays = STORES.find((s) => storeShard(s, 4) === 1 && storeShard(s, 3) === 1)!;
    expect(strangers.length).toBeGreaterThan(1);
    for (const s of [...strangers, stays]) {
      await old.registerStore(s, 9_000);
      await old.publishBacklog(s, backlog(2));
    }
    const marks = new Map((await old.activeStores(1)).map((a) => [a.store, a.mark]));
    // An apply of a process still on QUEUE_SHARDS=4 registers the first stranger again after its mark was read.
    await old.registerStore(strangers[0]!, 9_000);

    const r = await neu.moveStores(
      1,
      strangers.map((s) => ({ store: s, mark: marks.get(s)! })),
      1_000,
    );
    expect(r).toEqual({ moved: strangers.length - 1, errors: [] });
    for (const s of strangers.slice(1)) {
      expect(await shardsHolding(redis, s)).toEqual([neu.shardOf(s)]);
      expect((await neu.visitTimes(neu.shardOf(s))).get(s)).toBe(1_000);
      expect(await redis.hget(key(1, WORK_SUFFIX.stats), `${s}|r`)).toBeNull();
    }
    // Its mark moved: registered in its own shard, and still in the old one (harmless: moved again at a later tick).
    expect(await shardsHolding(redis, strangers[0]!)).toEqual([1, neu.shardOf(strangers[0]!)].sort());
    // The shard left keeps the totals of the stores it still holds.
    expect(await redis.hgetall(key(1, WORK_SUFFIX.totals))).toEqual({ rows: '4', entries: '4' });
    expect(await redis.zrange(key(1, WORK_SUFFIX.oldestUnfolded), 0, -1)).toEqual([stays, strangers[0]!].sort());
  });
});

describe('leftoverShards and drainShard', () => {
  it('find the shards past QUEUE_SHARDS holding any key, move their stores and delete their keys once empty', async () => {
    const old = store(redis, 4);
    const neu = store(redis, 2);
    for (const s of STORES) {
      await old.registerStore(s, 9_000);
      await old.publishBacklog(s, backlog(1));
    }
    // Shard 5 holds only stale totals (from an older QUEUE_SHARDS still), shard 7 only a visit time of no store.
    await redis.hset(key(5, WORK_SUFFIX.totals), 'rows', '3', 'entries', '3');
    await redis.zadd(key(7, WORK_SUFFIX.next), 1, 'GONE');
    expect(await neu.leftoverShards()).toEqual([2, 3, 5, 7]);
    expect(await store(redis, 256).leftoverShards()).toEqual([]);
    await expect(neu.drainShard(1, 1_000)).rejects.toThrow(RangeError);

    // A call moves at most `limit` stores.
    const inTwo = STORES.filter((s) => storeShard(s, 4) === 2);
    expect(inTwo.length).toBeGreaterThan(2);
    expect(await neu.drainShard(2, 1_000, 2)).toEqual({ moved: 2, empty: false, errors: [] });
    expect(await neu.drainShard(2, 1_000)).toEqual({ moved: inTwo.length - 2, empty: true, errors: [] });
    for (const shard of [3, 5, 7]) expect((await neu.drainShard(shard, 1_000)).empty).toBe(true);
    expect(await neu.leftoverShards()).toEqual([]);
    for (const s of STORES) expect(await shardsHolding(redis, s)).toEqual([neu.shardOf(s)]);
    // A shard the store never left is kept with its stats (its sealer ticks it); the moved stores await a visit.
    expect(await redis.hget(key(0, WORK_SUFFIX.stats), `${STORES.find((s) => storeShard(s, 4) === 0)!}|r`)).toBe('1');
  });
});

describe('on a Redis Cluster', () => {
  it('moves stores between shards on different masters: REGISTER on the store’s own shard’s master, then LEAVE_SHARD on the old one’s', async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const c = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
    try {
      const masters = await Promise.all([0, 1, 2, 3].map(async (w) => (await cluster.masterOf(key(w, WORK_SUFFIX.active))).url));
      expect(new Set(masters).size).toBeGreaterThan(1);
      const old = store(c, 4);
      const neu = store(c, 3);
      for (const s of STORES) {
        await old.registerStore(s, 9_000);
        await old.publishBacklog(s, backlog(1));
      }
      expect(await neu.leftoverShards()).toEqual([3]);
      const moved = STORES.filter((s) => storeShard(s, 4) === 3);
      expect(await neu.drainShard(3, 1_000)).toEqual({ moved: moved.length, empty: true, errors: [] });
      expect(await neu.leftoverShards()).toEqual([]);
      for (const shard of [0, 1, 2]) {
        const strangers = (await neu.activeStores(shard)).filter((a) => neu.shardOf(a.store) !== shard);
        expect((await neu.moveStores(shard, strangers, 1_000)).moved).toBe(strangers.length);
      }
      for (const s of STORES) expect(await shardsHolding(c, s)).toEqual([neu.shardOf(s)]);
    } finally {
      c.disconnect();
      await cluster.stop();
    }
  });
});
