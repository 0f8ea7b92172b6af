import { compileRules, defaultRules, distinctMember, type RowDeltas } from '@tally/schema';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BucketEraser, BucketStore } from './index';

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
    expect(await eraser.deleteStoreKeys('S')).toBe(before);
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
    expect(await buckets.activeStores(0)).toEqual([{ store: 'OTHER', mark: '1' }]);
    // Another store is untouched, and deleting again removes nothing more.
    expect((await buckets.snapshot('OTHER', ['S#product#P1']))[0]!.entries).toHaveLength(2); // (the test batch's pks)
    expect(await eraser.deleteStoreKeys('S')).toBe(0);
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
    expect(r).toEqual({ outboxEntries: 1, bucketEntries: 1, cachedHistory: true });
    const [visitor, product] = await buckets.snapshot('S', [pk, 'S#product#P1'], true);
    expect(visitor!.entries).toEqual([]);
    expect(visitor!.cache).toBeUndefined();
    expect(product!.entries).toHaveLength(2);
    expect((await buckets.storeBacklog('S')).entries).toBe(2); // store and product outbox fields
    await buckets.apply('S', 'd1', batch, { now: 9_000, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', [pk]))[0]!.entries).toEqual([]);
    expect((await buckets.snapshot('S', ['S#product#P1']))[0]!.entries).toHaveLength(2); // 2 + 2 in the open bucket, one field
    // Erasing again finds nothing; once the tombstone's time has passed the visitor counts again.
    expect(await eraser.eraseRow('S', pk, { until: 10_000, ttlSeconds: 60 })).toEqual({
      outboxEntries: 0,
      bucketEntries: 0,
      cachedHistory: false,
    });
    await buckets.apply('S', 'd2', batch, { now: 10_001, dedupeTtlSeconds: 60 });
    expect((await buckets.snapshot('S', [pk]))[0]!.entries).toHaveLength(1);
  });
});

describe('an erased row of a ranked entity', () => {
  it('is neither counted nor ranked, in a batch that ranks other members of the same rankings', async () => {
    const ranked = compileRules({
      ...defaultRules,
      entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor, rank: true } },
    });
    const store = new BucketStore({ redis, rules: ranked, prefix: 't' });
    const two = deltas({ 'S#visitor#V1': { '2023-123|v': 5, '2023-124|v': 1 }, 'S#visitor#V2': { '2023-123|v': 2 } });
    await store.apply('S', 'a', two, { now: 1_000, dedupeTtlSeconds: 60 });
    expect(await store.top('S', 'visitor', 'v', ['2023-123', '2023-124'], 10)).toEqual([
      { member: 'V1', score: 6 },
      { member: 'V2', score: 2 },
    ]);
    await redis.del('t:{S}:k:2023-123:v:visitor', 't:{S}:k:2023-124:v:visitor');
    await new BucketEraser({ redis, buckets: store }).eraseRow('S', 'S#visitor#V1', { until: 10_000, ttlSeconds: 60 });
    await store.apply('S', 'b', two, { now: 2_000, dedupeTtlSeconds: 60 });
    expect((await store.snapshot('S', ['S#visitor#V1']))[0]!.entries).toEqual([]);
    expect(await store.top('S', 'visitor', 'v', ['2023-123', '2023-124'], 10)).toEqual([{ member: 'V2', score: 2 }]);
    // A ranking only the erased row adds to is not created (nor given a TTL).
    expect(await redis.exists('t:{S}:k:2023-124:v:visitor')).toBe(0);
  });
});
