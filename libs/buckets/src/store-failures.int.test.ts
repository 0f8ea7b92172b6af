import type { RowDeltas } from '@tally/schema';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BucketsError, BucketStore } from './index';
import { useBucketStore } from './test-store';

/**
 * The sealer's batch calls, store by store: one store's corrupt key (or a node refusing its writes) costs that
 * store's visit, fold or publish, never the rest of its batch's.
 */
let redis: Redis;
let store: BucketStore;

useBucketStore((s, r) => {
  store = s;
  redis = r;
});

const view = (s: string): RowDeltas => new Map([[s, new Map([['2026-336|v', 1n]])]]);
const backlog = (rows: number, entries: number) => ({ rows, entries, oldestDirty: rows > 0 ? 5 : undefined, oldestUnfolded: undefined });
const work = (suffix: string) => `${store.keys.work(0)}${suffix}`;

async function applied(stores: readonly string[], now: number): Promise<void> {
  for (const s of stores) {
    await store.apply(s, 'a', view(s), { now, dedupeTtlSeconds: 60 });
    await store.registerStore(s);
  }
}

describe('visitEach and foldVisitedEach', () => {
  it('give a failed store its error in its place and visit, seal and fold the others', async () => {
    await applied(['A', 'B', 'C'], 1000);
    // B's epoch holds another type: its VISIT is refused (nothing written). C's entry count is not an integer: its
    // VISIT seals (it does not read the count when it hands the rows over), its FOLD is refused.
    const epochB = (await redis.get(store.keys.epoch('B')))!;
    await redis.del(store.keys.epoch('B'));
    await redis.hset(store.keys.epoch('B'), 'x', '1');
    await redis.hset(store.keys.counts('C'), 'entries', 'x');

    const visits = await store.visitEach(['A', 'B', 'C'], { now: 3000, minAgeMs: 0 });
    expect(visits[1]).toBeInstanceOf(Error);
    expect((visits[1] as Error).message).toMatch(/WRONGTYPE/);
    expect(visits[0]).toMatchObject({ sealed: 1000, sealedRows: ['A'] });
    expect(visits[2]).toMatchObject({ sealed: 1000, sealedRows: ['C'] });
    await expect(store.visitMany(['B'], { now: 3000, minAgeMs: 0 })).rejects.toThrow(/WRONGTYPE/);

    const folds = await store.foldVisitedEach(
      [
        { store: 'A', seq: 1000, pks: ['A'] },
        { store: 'C', seq: 1000, pks: ['C'] },
      ],
      3000,
    );
    expect(folds[0]).toMatchObject({ rows: 1, backlog: { rows: 1, entries: 1 }, sealedHead: undefined });
    expect(folds[1]).toBeInstanceOf(Error);
    expect((folds[1] as Error).message).toMatch(/TALLY_ERR_NOT_A_COUNT/);
    expect((await store.readOutbox('A', 'A')).entries.map((e) => e.value)).toEqual([1n]);
    // C's bucket stays sealed, at the head of its sealed list: its next visit folds it, once.
    expect(await redis.lrange(store.keys.sealed('C'), 0, -1)).toEqual(['1000']);
    await redis.hdel(store.keys.counts('C'), 'entries');
    await redis.del(store.keys.epoch('B'));
    await redis.set(store.keys.epoch('B'), epochB);
    const again = await store.visitEach(['B', 'C'], { now: 5000, minAgeMs: 0 });
    expect(again[0]).toMatchObject({ sealed: 1000 });
    expect(again[1]).toMatchObject({ sealed: undefined, sealedHead: 1000 });
    expect(await store.foldSealed('C', { now: 5000 })).toEqual({ buckets: 1, rows: 1 });
    expect((await store.readOutbox('C', 'C')).entries.map((e) => e.value)).toEqual([1n]);
  });
});

describe('publishBacklogsEach', () => {
  it("refuses a store's bad backlog or corrupt stats on their own, publishes the others, and throws a refusal of the whole shard", async () => {
    const stores = Array.from({ length: 9 }, (_, i) => `S${i}`);
    for (const s of stores) await store.registerStore(s);
    // S2's stats hold a non-integer (refused by the script: found in halves), S6's backlog is not integers (refused
    // before anything is sent).
    await redis.hset(work('stats'), 'S2|r', 'x');
    const marks = new Map((await store.activeStores(0)).map((a) => [a.store, a.mark]));
    const items = stores.map((s) => ({
      store: s,
      backlog: s === 'S6' ? backlog(1, Number.NaN) : backlog(1, 2),
      mark: marks.get(s),
      visitAt: 9000,
    }));
    await expect(store.publishBacklogs(0, items)).rejects.toThrow(/TALLY_ERR_/);
    const out = await store.publishBacklogsEach(0, items);
    expect(out.map((r) => (r instanceof Error ? 'error' : r))).toEqual([
      'published',
      'published',
      'error',
      'published',
      'published',
      'published',
      'error',
      'published',
      'published',
    ]);
    expect((out[2] as Error).message).toMatch(/TALLY_ERR_NOT_A_COUNT .* S2 /);
    expect(out[6]).toBeInstanceOf(BucketsError);
    expect((out[6] as BucketsError).code).toBe('TALLY_ERR_ARGUMENT');
    expect(await redis.hgetall(work('totals'))).toEqual({ rows: '7', entries: '14' });
    const times = await store.visitTimes(0);
    expect(stores.map((s) => times.get(s))).toEqual(stores.map((s) => (s === 'S2' || s === 'S6' ? 0 : 9000)));

    // A refusal whatever the stores (the shard's totals corrupt) is not one store's: thrown, as publishBacklogs.
    await redis.hset(work('totals'), 'rows', 'x');
    await expect(store.publishBacklogsEach(0, items.slice(0, 4))).rejects.toThrow(/TALLY_ERR_NOT_A_COUNT/);
  });
});

describe('deferVisits', () => {
  it('moves visit times later only, and never brings back a store that left the work set', async () => {
    await store.registerStore('D', 100);
    await store.registerStore('L', 100);
    const [{ mark }] = (await store.activeStores(0)).filter((a) => a.store === 'L') as [{ store: string; mark: string }];
    await store.publishBacklogs(0, [{ store: 'L', backlog: backlog(1, 1), mark, visitAt: 50_000 }]);
    await store.deferVisits(0, ['D', 'L', 'GONE'], 20_000);
    const times = await store.visitTimes(0);
    expect(Object.fromEntries(times)).toEqual({ D: 20_000, L: 50_000 });
    expect((await store.activeStores(0)).map((a) => a.store).sort()).toEqual(['D', 'L']);
  });
});
