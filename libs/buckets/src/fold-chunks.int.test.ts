import type { RowDeltas } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import type { BucketStore } from './index';
import { useBucketStore } from './test-store';

let store: BucketStore;

useBucketStore((s) => {
  store = s;
});

// Every other fold test in this library folds fewer than 200 rows (ROWS_PER_FOLD) per FOLD call, so a FOLD that
// dropped a row of a full 200-row call (taken out of the bucket's row set but not copied to its outbox) went unseen.
describe('fold in full chunks (ROWS_PER_FOLD)', () => {
  it('copies every row of a bucket larger than one FOLD call into its outbox, with foldSealed and foldVisitedMany', async () => {
    const rows = 450;
    const deltas = (b: number): RowDeltas =>
      new Map(Array.from({ length: rows }, (_, p) => [`S#product#P${p}`, new Map([['2023-123|v', b + p + 1]])]));
    await store.apply('S', 'a', deltas(0), { now: 1000, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 2000, minAgeMs: 0 });
    expect(await store.foldSealed('S', { now: 3000 })).toEqual({ buckets: 1, rows });

    await store.apply('S', 'b', deltas(1000), { now: 3000, dedupeTtlSeconds: 60 });
    const seq = await store.seal('S', { now: 4000, minAgeMs: 0 });
    expect(seq).toBe(2000);
    const pks = Array.from({ length: rows }, (_, p) => `S#product#P${p}`);
    const [report] = await store.foldVisitedMany([{ store: 'S', seq: seq!, pks }], 5000);
    expect(report).toBeDefined();

    for (let p = 0; p < rows; p++) {
      const out = await store.readOutbox('S', `S#product#P${p}`);
      expect(out.entries.map((e) => [e.seq, e.value]).sort((x, y) => Number(x[0]) - Number(y[0]))).toEqual([
        [1000, BigInt(p + 1)],
        [2000, BigInt(1000 + p + 1)],
      ]);
    }
  });
});
