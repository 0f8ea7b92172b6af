import type { RowDeltas } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import type { BucketStore } from './index';
import { useBucketStore } from './test-store';

let store: BucketStore;

useBucketStore((s) => {
  store = s;
});

const one = (pk: string, v: number): RowDeltas => new Map([[pk, new Map([['2023-123|v', v]])]]);
const opts = (now: number) => ({ now, dedupeTtlSeconds: 60 });

describe('bucket order', () => {
  it('a FOLD call that leaves rows of the bucket unfolded does not finish it: foldedThrough waits for the last row', async () => {
    await store.apply('S', 'a', new Map([...one('S#product#P1', 1), ...one('S#product#P2', 2)]), opts(1000));
    const seq = await store.seal('S', { now: 2000, minAgeMs: 0 });
    expect(seq).toBe(1000);
    // Another folder took P2 meanwhile: this call folds P1 only, and the bucket still has a row to fold.
    expect(await store.foldVisitedMany([{ store: 'S', seq: seq!, pks: ['S#product#P1'] }], 3000)).toEqual([undefined]);
    const early = await store.readOutbox('S', 'S#product#P1');
    expect(early.foldedThrough).toBe(-1);
    expect(early.entries).toEqual([]);
    expect(await store.foldSealed('S', { now: 3000 })).toEqual({ buckets: 1, rows: 1 });
    expect((await store.readOutbox('S', 'S#product#P1')).foldedThrough).toBe(1000);
    expect((await store.readOutbox('S', 'S#product#P2')).entries.map((e) => e.value)).toEqual([2n]);
  });

  it('the bucket opened by a seal or a visit at the sealed bucket’s own open time gets a later seq, and the sealed one never changes', async () => {
    await store.apply('S', 'a', one('S', 1), opts(1000));
    expect(await store.seal('S', { now: 1000, minAgeMs: 0 })).toBe(1000);
    await store.apply('S', 'b', one('S', 10), opts(1000));
    const v = await store.visit('S', { now: 1001, minAgeMs: 0 });
    expect(v.sealed).toBe(1001);
    await store.apply('S', 'c', one('S', 100), opts(1001));
    expect(Number(v.epoch)).toBeGreaterThan(1001);
    expect(await store.foldSealed('S', { now: 2000 })).toEqual({ buckets: 2, rows: 2 });
    const out = await store.readOutbox('S', 'S');
    expect(out.entries.map((e) => [e.seq, e.value]).sort((x, y) => Number(x[0]) - Number(y[0]))).toEqual([
      [1000, 1n],
      [1001, 10n],
    ]);
  });
});
