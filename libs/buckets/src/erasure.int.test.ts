import { dayKey, fromEpochDay } from '@tally/key-layout';
import { compileRules, defaultRules, distinctMember, flattenDistinct, rollup, rollupDistinct, type RowDeltas } from '@tally/schema';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BucketEraser, BucketStore, recordTopHistory } from './index';

// Tombstones and erasure on the Redis side (docs/DESIGN.md "Privacy").
let server: RedisHandle;
let redis: Redis;
let buckets: BucketStore;
let eraser: BucketEraser;
const rules = compileRules(defaultRules);
const deltas = (rows: Record<string, Record<string, number>>): RowDeltas =>
  new Map(Object.entries(rows).map(([pk, f]) => [pk, new Map(Object.entries(f))]));
const batch = deltas({ S: { '2023-123|v': 2 }, 'S#product#P1': { '2023-123|v': 2 }, 'S#visitor#V1': { '2023-123|v': 2 } });

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url);
  buckets = new BucketStore({ redis, rules, prefix: 't' });
  eraser = new BucketEraser({ redis, buckets });
});
afterAll(async () => {
  await redis?.quit();
  await server?.stop();
});
beforeEach(async () => {
  await redis.flushall();
});

/** Applies, seals and folds one batch, then applies another into the open bucket: data in every stage. */
async function fill(store = 'S', now = 1_000) {
  await buckets.registerStore(store);
  await buckets.apply(store, `b${now}`, batch, { now, dedupeTtlSeconds: 60 });
  await buckets.seal(store, { now: now + 1, minAgeMs: 0 });
  await buckets.foldSealed(store, { now: now + 2 });
  await buckets.apply(store, `c${now}`, batch, { now: now + 3, dedupeTtlSeconds: 60 });
  await buckets.fillCache(store, 'S#visitor#V1', '0', '[]', 60);
  await buckets.sketches.add(store, sketchAdds(store));
}

/** One visitor in the store row's day sketch (unique visitors). */
const sketchAdds = (store: string) => new Map([[store, new Map([['2023-123|uv', new Set([distinctMember('V1')])]])]]);

describe('a deleted store', () => {
  it('loses every key but its tombstone, and no script re-creates any', async () => {
    await fill();
    await fill('OTHER');
    const before = (await redis.keys('t:{S}:*')).length;
    expect(before).toBeGreaterThan(8);
    expect(await redis.keys('t:{S}:u*')).toHaveLength(2); // the sketch's exact set and unwritten-fields set (no HLL at 1 member)
    await eraser.markStoreDeleted('S', 60);
    // Kept for the window and its slack (300 s at the least): past the aggregator's refusal at the window.
    expect(await redis.ttl('t:{S}:x')).toBeGreaterThan(60 + 300 - 5);
    // What a flush that read an outbox before may still write: the epoch, and each dirty row's outbox days.
    expect(await eraser.unwritten('S')).toEqual({
      epoch: 1_001,
      outboxDays: new Map([
        ['S', ['2023-123']],
        ['S#product#P1', ['2023-123']],
        ['S#visitor#V1', ['2023-123']],
      ]),
    });
    expect(await eraser.deleteStoreKeys('S')).toBe(before);
    expect(await eraser.unwritten('S')).toEqual({ epoch: undefined, outboxDays: new Map() });
    expect(await redis.keys('t:{S}:*')).toEqual(['t:{S}:x']);
    // The late batch, the sealer and the writer change nothing.
    expect(await buckets.apply('S', 'late', batch, { now: 5_000, dedupeTtlSeconds: 60 })).toEqual({
      applied: false,
      seq: 0,
      deleted: true,
    });
    expect(await buckets.seal('S', { now: 6_000, minAgeMs: 0 })).toBeUndefined();
    expect(await buckets.visit('S', { now: 6_000, minAgeMs: 0 })).toMatchObject({
      sealed: undefined,
      due: 0,
      backlog: { rows: 0, entries: 0 },
    });
    expect(await buckets.foldSealed('S', { now: 6_000 })).toEqual({ buckets: 0, rows: 0 });
    expect(await buckets.readOutbox('S', 'S')).toEqual({ foldedThrough: -1, entries: [] });
    expect(await buckets.ackOutbox('S', 'S', ['1000|2023-123|v'], 6_000)).toBe(0);
    expect(await buckets.fillCache('S', 'S#visitor#V1', '0', '[]', 60)).toBe(false);
    await buckets.sketches.add('S', sketchAdds('S'));
    expect(await buckets.sketches.read('S', ['S'])).toEqual([[]]);
    expect(await redis.keys('t:{S}:*')).toEqual(['t:{S}:x']);
    expect(await buckets.activeStores(0)).toEqual([{ store: 'OTHER', mark: expect.any(String) }]);
    // Another store is untouched, and deleting again removes nothing more.
    expect((await buckets.snapshot('OTHER', ['S#product#P1']))[0]!.entries).toHaveLength(2); // (the test batch's pks)
    expect(await eraser.deleteStoreKeys('S')).toBe(0);
  });

  it('whose id is a work-set shard’s tag (created before such ids were refused) leaves the shard’s keys alone', async () => {
    const twin = 't:w0'; // its keys share the tag of work-set shard 0 (KEY_PREFIX t)
    await buckets.registerStore('OTHER', 9_000);
    await buckets.registerStore(twin, 9_000);
    await buckets.publishBacklog('OTHER', { rows: 2, entries: 3, oldestDirty: 5, oldestUnfolded: 7 });
    await buckets.apply(twin, 'b1', deltas({ [twin]: { '2023-123|v': 2 } }), { now: 1_000, dedupeTtlSeconds: 60 });
    await eraser.markStoreDeleted(twin, 60);
    expect(await eraser.deleteStoreKeys(twin)).toBeGreaterThan(0);
    // The other store of shard 0 is still in the work set, with its visit time and the shard's gauges.
    expect((await buckets.activeStores(0)).map((a) => a.store)).toEqual(['OTHER']);
    expect((await buckets.visitTimes(0)).get('OTHER')).toBe(9_000);
    expect(await redis.hgetall('t:{t:w0}:totals')).toEqual({ rows: '2', entries: '3' });
    expect(await redis.keys('t:{t:w0}:b*')).toEqual([]);
  });

  it('keys in flight when the tombstone is set: a fold of an already sealed bucket deletes instead of moving', async () => {
    await buckets.apply('S', 'b1', batch, { now: 1_000, dedupeTtlSeconds: 60 });
    await buckets.seal('S', { now: 1_001, minAgeMs: 0 });
    await eraser.markStoreDeleted('S', 60);
    expect(await buckets.foldSealed('S', { now: 1_002 })).toEqual({ buckets: 1, rows: 0 });
    expect((await redis.keys('t:{S}:o:*')).length).toBe(0);
  });
});

describe('an erased row', () => {
  it('loses its outbox, bucket counts and cache; other rows keep theirs; new counts of it are dropped until the tombstone ends', async () => {
    await fill();
    const pk = 'S#visitor#V1';
    const r = await eraser.eraseRow('S', pk, { until: 10_000, ttlSeconds: 60 });
    // With the epoch it read (the open bucket's seq: every bucket of the erased counts is below it) and the days of
    // the outbox counts erased (a flush that read them writes to those days' items).
    expect(r).toEqual({
      outboxEntries: 1,
      bucketEntries: 1,
      cachedHistory: true,
      sketches: 0,
      rankings: 0,
      epoch: 1_001,
      outboxDays: ['2023-123'],
      unfinished: false,
    });
    const [visitor, product] = await buckets.snapshot('S', [pk, 'S#product#P1'], true);
    expect(visitor!.entries).toEqual([]);
    expect(visitor!.cache).toBeUndefined();
    expect(product!.entries).toHaveLength(2);
    expect((await buckets.storeBacklog('S')).entries).toBe(2); // store and product outbox fields
    await buckets.apply('S', 'd1', batch, { now: 9_000, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', [pk]))[0]!.entries).toEqual([]);
    expect((await buckets.snapshot('S', ['S#product#P1']))[0]!.entries).toHaveLength(2); // 2 + 2 in the open bucket, one field
    // Erasing again finds nothing. The tombstone lasts its time plus the window's slack (300 s for a 60 s window),
    // as the dedupe records do: a batch the aggregator checked just inside the window and applied a little later
    // (or whose producer's clock is behind) is still dropped.
    expect(await eraser.eraseRow('S', pk, { until: 10_000, ttlSeconds: 60 })).toEqual({
      outboxEntries: 0,
      bucketEntries: 0,
      cachedHistory: false,
      sketches: 0,
      rankings: 0,
      epoch: 1_001,
      outboxDays: [],
      unfinished: false, // the clock's now is past the first erasure's entry (10,000 + the slack)
    });
    expect(await redis.ttl('t:{S}:xr')).toBeGreaterThan(60 + 300 - 5);
    await buckets.apply('S', 'd2', batch, { now: 10_001, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', [pk]))[0]!.entries).toEqual([]);
    // Once that has passed the visitor counts again.
    await buckets.apply('S', 'd3', batch, { now: 10_000 + 300_000 + 1, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', [pk]))[0]!.entries).toHaveLength(1);
  });

  it('drops the outbox-entry gauge by the counts erased, not by their limbs', async () => {
    await buckets.registerStore('S');
    const big = new Map<string, bigint>([
      ['2023-123|r', 3n * 10n ** 15n + 1n], // two limbs: one count
      ['2023-123|v', 1n],
    ]);
    await buckets.apply(
      'S',
      'a',
      new Map([
        ['S', new Map([['2023-123|v', 1n]])],
        ['S#visitor#V1', big],
      ]),
      { now: 1_000, dedupeTtlSeconds: 60 },
    );
    await buckets.seal('S', { now: 1_001, minAgeMs: 0 });
    await buckets.foldSealed('S', { now: 1_002 });
    await buckets.apply('S', 'b', new Map([['S#visitor#V1', big]]), { now: 1_003, dedupeTtlSeconds: 60 });
    expect(await redis.hlen('t:{S}:o:S#visitor#V1')).toBe(3);
    expect((await buckets.storeBacklog('S')).entries).toBe(3); // S: 1, S#visitor#V1: 2
    // Counts, not their limbs, in what the erasure reports too.
    expect(await eraser.eraseRow('S', 'S#visitor#V1', { until: 10_000, ttlSeconds: 60 })).toEqual({
      outboxEntries: 2,
      bucketEntries: 2,
      cachedHistory: false,
      sketches: 0,
      rankings: 0,
      epoch: 1_001,
      outboxDays: ['2023-123'], // once, for two fields and a limb
      unfinished: false,
    });
    expect((await buckets.storeBacklog('S')).entries).toBe(1);
  });

  it('restarts a cache version that had expired at its clock, never at 1 (a version a history memo may hold), and bumps one that is there', async () => {
    const pk = 'S#visitor#V1';
    await eraser.eraseRow('S', pk, { until: 10_000, ttlSeconds: 60, now: 7_000 });
    expect(await redis.get(`t:{S}:v:${pk}`)).toBe('7000');
    await eraser.eraseRow('S', pk, { until: 10_000, ttlSeconds: 60, now: 8_000 });
    expect(await redis.get(`t:{S}:v:${pk}`)).toBe('7001');
  });
});

describe('an erased row of a ranked entity', () => {
  const ranked = compileRules({
    ...defaultRules,
    entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor, rank: true } },
  });
  const now = Date.UTC(2023, 4, 3, 12); // 2023-123
  /** The day `n` days from `now`'s (UTC). */
  const day = (n: number) => dayKey(fromEpochDay(Math.floor(now / 86_400_000) + n));

  it('leaves every ranking it was in, is neither counted nor ranked by a batch after, and the other members stay', async () => {
    const store = new BucketStore({ redis, rules: ranked, prefix: 't' });
    // Today, tomorrow (an event within the clock skew), 130 days ago (an event accepted late: its ranking lives
    // TOP_HISTORY_DAYS from this apply), and another metric.
    const two = deltas({
      'S#visitor#V1': { [`${day(0)}|v`]: 5, [`${day(1)}|v`]: 1, [`${day(-130)}|v`]: 2, [`${day(0)}|o`]: 1 },
      'S#visitor#V2': { [`${day(0)}|v`]: 2, [`${day(-130)}|v`]: 1 },
    });
    await store.apply('S', 'a', two, { now, dedupeTtlSeconds: 60 });
    expect(await store.top('S', 'visitor', 'v', [day(0), day(1)], 10)).toEqual([
      { member: 'V1', score: 6 },
      { member: 'V2', score: 2 },
    ]);
    const rankedEraser = new BucketEraser({ redis, buckets: store });
    // Four rankings: v of today, tomorrow and 130 days ago, o of today.
    expect((await rankedEraser.eraseRow('S', 'S#visitor#V1', { until: now + 10_000, ttlSeconds: 60, now })).rankings).toBe(4);
    expect(await store.top('S', 'visitor', 'v', [day(0), day(1)], 10)).toEqual([{ member: 'V2', score: 2 }]);
    expect(await store.top('S', 'visitor', 'v', [day(-130)], 10)).toEqual([{ member: 'V2', score: 1 }]);
    // A ranking it alone was in is gone.
    expect(await redis.exists(`t:{S}:k:${day(1)}:v:visitor`, `t:{S}:k:${day(0)}:o:visitor`)).toBe(0);
    expect(await rankedEraser.unrankRow('S', 'S#visitor#V1', { windowSeconds: 60, now })).toBe(0);

    await store.apply('S', 'b', two, { now: now + 1_000, dedupeTtlSeconds: 60 });
    expect((await store.snapshot('S', ['S#visitor#V1']))[0]!.entries).toEqual([]);
    expect(await store.top('S', 'visitor', 'v', [day(0), day(1)], 10)).toEqual([{ member: 'V2', score: 4 }]);
    // A ranking only the erased row adds to is not created (nor given a TTL).
    expect(await redis.exists(`t:{S}:k:${day(1)}:v:visitor`, `t:{S}:k:${day(0)}:o:visitor`)).toBe(0);
  });

  it('cut short between ERASE_ROW and UNRANK, stays ranked until erased again, which takes it out and says so', async () => {
    const store = new BucketStore({ redis, rules: ranked, prefix: 't' });
    await store.apply('S', 'a', deltas({ 'S#visitor#V1': { [`${day(0)}|v`]: 5 }, 'S#visitor#V2': { [`${day(0)}|v`]: 2 } }), {
      now,
      dedupeTtlSeconds: 60,
    });
    const cut = new BucketEraser({ redis, buckets: store });
    cut.unrankRow = () => Promise.reject(new Error('crashed before UNRANK'));
    await expect(cut.eraseRow('S', 'S#visitor#V1', { until: now + 10_000, ttlSeconds: 60, now })).rejects.toThrow('crashed before UNRANK');
    expect((await store.snapshot('S', ['S#visitor#V1']))[0]!.entries).toEqual([]);
    expect((await store.top('S', 'visitor', 'v', [day(0)], 10)).map((m) => m.member)).toEqual(['V1', 'V2']);
    const again = await new BucketEraser({ redis, buckets: store }).eraseRow('S', 'S#visitor#V1', {
      until: now + 10_000,
      ttlSeconds: 60,
      now,
    });
    expect(again).toMatchObject({ outboxEntries: 0, bucketEntries: 0, sketches: 0, rankings: 1 });
    expect(await store.top('S', 'visitor', 'v', [day(0)], 10)).toEqual([{ member: 'V2', score: 2 }]);
  });

  it('leaves the rankings of every day an aggregator keeping them longer (its TOP_HISTORY_DAYS recorded) may still hold', async () => {
    const store = new BucketStore({ redis, rules: ranked, prefix: 't', rankTtlSeconds: 400 * 86_400 });
    await recordTopHistory(redis, store.keys.topHistory, 400, now - 500 * 86_400_000);
    // An event accepted 3,650 days late (LATENESS_HORIZON_DAYS' maximum) 380 days ago: its day's ranking lives until
    // 20 days from now. Under the default 100 days it would have gone.
    const old = deltas({ 'S#visitor#V1': { [`${day(-4_030)}|v`]: 1 }, 'S#visitor#V2': { [`${day(-4_030)}|v`]: 1 } });
    await store.apply('S', 'a', old, { now: now - 380 * 86_400_000, dedupeTtlSeconds: 60 });
    await new BucketEraser({ redis, buckets: store }).eraseRow('S', 'S#visitor#V1', { until: now + 10_000, ttlSeconds: 60, now });
    expect(await redis.zrange(`t:{S}:k:${day(-4_030)}:v:visitor`, 0, -1)).toEqual(['V2']);
  });

  it('of an entity the rules do not rank touches no ranking', async () => {
    await redis.zadd(`t:{S}:k:${day(0)}:v:visitor`, 1, 'V1');
    expect(await eraser.unrankRow('S', 'S#visitor#V1', { windowSeconds: 60, now })).toBe(0);
    expect(await redis.zrange(`t:{S}:k:${day(0)}:v:visitor`, 0, -1)).toEqual(['V1']);
  });
});

/** The pks the erased-rows key holds, whatever its type (a zset; a hash in earlier versions). */
async function erasedPks(store = 'S'): Promise<string[]> {
  const key = `t:{${store}}:xr`;
  const type = await redis.type(key);
  if (type === 'hash') return (await redis.hkeys(key)).sort();
  if (type === 'zset') return (await redis.zrange(key, 0, -1)).sort();
  return [];
}

describe('the erased rows', () => {
  it('are pruned at the next erasure once their time has passed, and the others are kept and honoured', async () => {
    // (The stored time is `until` plus the window's slack: 300 s for a 60 s window.)
    await eraser.eraseRow('S', 'S#visitor#A', { until: 10_000, ttlSeconds: 60, now: 1_000 });
    await eraser.eraseRow('S', 'S#visitor#B', { until: 20_000, ttlSeconds: 60, now: 11_000 });
    expect(await erasedPks()).toEqual(['S#visitor#A', 'S#visitor#B']);
    // At 315,000 A's time (310,000) has passed: the erasure of C drops it, not B's (320,000).
    await eraser.eraseRow('S', 'S#visitor#C', { until: 315_000, ttlSeconds: 60, now: 315_000 });
    expect(await erasedPks()).toEqual(['S#visitor#B', 'S#visitor#C']);
    const two = deltas({ 'S#visitor#A': { '2023-123|v': 1 }, 'S#visitor#B': { '2023-123|v': 1 }, 'S#visitor#C': { '2023-123|v': 1 } });
    await buckets.apply('S', 'x', two, { now: 316_000, dedupeTtlSeconds: 60 });
    const counted = await buckets.snapshot('S', ['S#visitor#A', 'S#visitor#B', 'S#visitor#C']);
    expect(counted.map((r) => r.entries.length)).toEqual([1, 0, 0]);
    // Erasing a row again keeps its later time.
    await eraser.eraseRow('S', 'S#visitor#C', { until: 1_000, ttlSeconds: 60, now: 316_000 });
    await buckets.apply('S', 'y', two, { now: 320_000, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', ['S#visitor#C']))[0]!.entries).toEqual([]);
  });

  it('written as a hash by an earlier version, are still honoured, and the next erasure makes them a pruned zset', async () => {
    await redis.hset('t:{S}:xr', 'S#visitor#A', '9000', 'S#visitor#B', '900000');
    await redis.expire('t:{S}:xr', 5_000);
    const ab = deltas({ 'S#visitor#A': { '2023-123|v': 1 }, 'S#visitor#B': { '2023-123|v': 1 } });
    await buckets.apply('S', 'x', ab, { now: 8_000, dedupeTtlSeconds: 60 });
    await buckets.sketches.add('S', new Map([['S#visitor#B', new Map([['2023-123|uv', new Set([distinctMember('P')])]])]]), 8_000);
    expect((await buckets.snapshot('S', ['S#visitor#A', 'S#visitor#B'])).map((r) => r.entries.length)).toEqual([0, 0]);
    expect(await redis.keys('t:{S}:u*')).toEqual([]);
    await eraser.eraseRow('S', 'S#visitor#C', { until: 10_000, ttlSeconds: 60, now: 10_000 });
    expect(await redis.type('t:{S}:xr')).toBe('zset');
    expect(await erasedPks()).toEqual(['S#visitor#B', 'S#visitor#C']);
    expect(await redis.ttl('t:{S}:xr')).toBeGreaterThan(4_990);
    await buckets.apply('S', 'y', ab, { now: 10_001, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', ['S#visitor#A', 'S#visitor#B'])).map((r) => r.entries.length)).toEqual([1, 0]);
  });
});

describe("the erased rows' days", () => {
  const pk = 'S#visitor#V1';
  const erase = (row: string, now: number, until = 10_000) => eraser.eraseRow('S', row, { until, ttlSeconds: 60, now });

  it('come back from every erasure of the row while its entry lives (a call cut short loses none), and go with it', async () => {
    await fill(); // V1's counts of 2023-123 in its outbox
    // (The entry's time is `until` plus the window's slack: 310,000.)
    expect((await erase(pk, 2_000)).outboxDays).toEqual(['2023-123']);
    expect(await redis.hgetall('t:{S}:xd')).toEqual({ [pk]: '2023-123' });
    expect(await redis.ttl('t:{S}:xd')).toBeGreaterThan(60 + 300 - 5);
    // The outbox is gone: a re-run gets the days back all the same.
    expect(await erase(pk, 3_000)).toMatchObject({ outboxEntries: 0, outboxDays: ['2023-123'] });
    // Merged with the days of the outbox erased now, each once.
    await redis.hset('t:{S}:xd', pk, '2023-100,2023-123');
    await buckets.apply('S', 'other', deltas({ 'S#visitor#V2': { '2023-124|v': 1 } }), { now: 4_000, dedupeTtlSeconds: 60 });
    await buckets.seal('S', { now: 4_001, minAgeMs: 0 });
    await buckets.foldSealed('S', { now: 4_002 });
    expect((await erase('S#visitor#V2', 5_000, 20_000)).outboxDays).toEqual(['2023-124']);
    expect((await erase(pk, 6_000)).outboxDays).toEqual(['2023-100', '2023-123']);
    // At 315,000 V1's entry (310,000) has passed: an erasure of another row drops its days with it, not V2's (320,000).
    // (V3's field, with no day, is the mark of its erasure, unfinished until forgetErasedDays.)
    await erase('S#visitor#V3', 315_000, 315_000);
    expect(await redis.hgetall('t:{S}:xd')).toEqual({ 'S#visitor#V2': '2023-124', 'S#visitor#V3': '' });
    // V2's entry has passed too at its own next erasure: the days of its old erasure go (and its mark: that erasure
    // is not taken for unfinished), and it has none now.
    expect(await erase('S#visitor#V2', 321_000, 321_000)).toMatchObject({ outboxDays: [], unfinished: false });
    expect(await redis.hgetall('t:{S}:xd')).toEqual({ 'S#visitor#V2': '', 'S#visitor#V3': '' });
    // Finished erasures are forgotten, days and mark.
    await eraser.forgetErasedDays('S', ['S#visitor#V2', 'S#visitor#V3']);
    expect(await redis.exists('t:{S}:xd')).toBe(0);
  });

  it("mark every erasure of the row unfinished (with days or none) until forgetErasedDays, for the row's entry's life", async () => {
    // Nothing of V1 in Redis (its counts may all be in DynamoDB): the erasure marks the row all the same.
    expect(await erase(pk, 2_000)).toMatchObject({ outboxEntries: 0, outboxDays: [], unfinished: false });
    expect(await redis.hgetall('t:{S}:xd')).toEqual({ [pk]: '' });
    expect(await redis.ttl('t:{S}:xd')).toBeGreaterThan(60 + 300 - 5);
    // The next erasure finds it: the first was cut short (a 503, an error, a crash) before its caller forgot the row.
    expect(await erase(pk, 3_000)).toMatchObject({ outboxDays: [], unfinished: true });
    await eraser.forgetErasedDays('S', [pk]);
    expect(await redis.exists('t:{S}:xd')).toBe(0);
    expect(await erase(pk, 4_000)).toMatchObject({ unfinished: false });
    // Once the row's entry (310,000) has passed, its mark goes with it.
    expect(await erase(pk, 311_000, 311_000)).toMatchObject({ unfinished: false });
    expect(await erase(pk, 312_000, 311_000)).toMatchObject({ unfinished: true });
  });

  it('are dropped when the erased rows are gone, and are what a deleted store may still get from a flush', async () => {
    await fill();
    await erase(pk, 2_000);
    await redis.hset('t:{S}:xd', 'S#visitor#GONE', '2023-001');
    // No entry left (the zset expired before the days, or was deleted): no row's days are kept (only the new mark).
    await redis.del('t:{S}:xr');
    expect(await erase('S#visitor#V9', 3_000)).toMatchObject({ outboxDays: [], unfinished: false });
    expect(await redis.hgetall('t:{S}:xd')).toEqual({ 'S#visitor#V9': '' });
    await redis.hset('t:{S}:xd', pk, '2023-123,2023-100');
    await redis.zadd('t:{S}:xr', 310_000, pk);
    // A deletion cut short erasures: the erased rows' days are among the store's unwritten ones, with the outboxes'.
    await eraser.markStoreDeleted('S', 60);
    expect(await eraser.unwritten('S')).toEqual({
      epoch: 1_001,
      outboxDays: new Map([
        ['S', ['2023-123']],
        ['S#product#P1', ['2023-123']],
        [pk, ['2023-123', '2023-100']],
      ]),
    });
    await eraser.deleteStoreKeys('S');
    expect(await redis.keys('t:{S}:*')).toEqual(['t:{S}:x']);
  });

  it('of another type make the erasure fail before it writes anything', async () => {
    await fill();
    await redis.set('t:{S}:xd', 'x');
    await expect(erase(pk, 2_000)).rejects.toThrow(/WRONGTYPE t:\{S\}:xd holds a string, not a hash/);
    expect(await redis.hlen(`t:{S}:o:${pk}`)).toBe(1);
    expect(await redis.exists('t:{S}:xr')).toBe(0);
  });
});

describe('an erased row with sketches of its own (a distinct-count metric on the visitor entity)', () => {
  const own = compileRules({
    ...defaultRules,
    metrics: { ...defaultRules.metrics, UniqueProducts: { code: 'up', description: 'distinct products a visitor viewed' } },
    entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor, distinct: { UniqueProducts: 'product' } } },
  });
  const view = (visitor: string, product: string) => ({ type: 'view', ts: Date.parse('2023-05-03T10:00:00Z'), dims: { product, visitor } });
  // V1 views 301 products (its sketch passes the exact threshold: a set and an HLL), V2 two.
  const events = [...Array.from({ length: 301 }, (_, i) => view('V1', `P${i}`)), view('V2', 'P1'), view('V2', 'P2')];
  const visitorKeys = async (v: string) => (await redis.keys(`t:{S}:u*S#visitor#${v}*`)).sort();

  it('loses them, and no batch in flight adds them again while it is erased', async () => {
    const store = new BucketStore({ redis, rules: own, prefix: 't' });
    const erase = new BucketEraser({ redis, buckets: store });
    await store.apply('S', 'a', rollup(own, 'S', 'UTC', events), { now: 1_000, dedupeTtlSeconds: 60 });
    await store.sketches.add('S', rollupDistinct(own, 'S', 'UTC', events));
    expect(await visitorKeys('V1')).toEqual([
      't:{S}:uh:S#visitor#V1|2023-123|up',
      't:{S}:ur:S#visitor#V1',
      't:{S}:us:S#visitor#V1|2023-123|up',
    ]);
    const v2 = await visitorKeys('V2');
    expect(v2).toHaveLength(2);
    const r = await erase.eraseRow('S', 'S#visitor#V1', { until: 10_000, ttlSeconds: 60, now: 1_500 });
    expect(r).toMatchObject({ sketches: 1 }); // one day of UniqueProducts
    expect(await visitorKeys('V1')).toEqual([]);
    expect(await store.sketches.read('S', ['S#visitor#V1'])).toEqual([[]]);
    // A batch in flight (as events, or rolled up by the collector) adds the other rows' members, not the erased row's.
    await store.sketches.add('S', rollupDistinct(own, 'S', 'UTC', [view('V1', 'P9'), view('V2', 'P3')]), 2_000);
    await store.sketches.add('S', flattenDistinct(rollupDistinct(own, 'S', 'UTC', [view('V1', 'P8'), view('V2', 'P4')])), 2_000);
    expect(await visitorKeys('V1')).toEqual([]);
    expect(await visitorKeys('V2')).toEqual(v2);
    const [live] = await store.sketches.read('S', ['S#visitor#V2']);
    expect(live!.map((x) => (x.blob.length - 1) / 8)).toEqual([4]);
    // Erasing again finds no sketch; once the tombstone's time (with its slack) has passed, the row's sketches grow again.
    expect((await erase.eraseRow('S', 'S#visitor#V1', { until: 10_000, ttlSeconds: 60, now: 2_000 })).sketches).toBe(0);
    await store.sketches.add('S', rollupDistinct(own, 'S', 'UTC', [view('V1', 'P9')]), 10_000 + 300_000);
    expect(await visitorKeys('V1')).toEqual(['t:{S}:ur:S#visitor#V1', 't:{S}:us:S#visitor#V1|2023-123|up']);
  });
});
