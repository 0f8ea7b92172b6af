import { SketchStore } from '@tally/buckets';
import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { countUnions, UNION_CALL_LIMITS } from './distinct';

let redis: Redis;
let sketches: SketchStore;
useRedis((r) => {
  redis = r;
  sketches = new SketchStore({ redis, prefix: 'c' });
});

const member = (v: string) => createHash('sha256').update(v).digest().subarray(0, 8);
/** An exact sketch of visitors `from` to `to` - 1. */
const exact = (from: number, to: number) =>
  Buffer.concat([Buffer.from('X'), ...Array.from({ length: to - from }, (_, i) => member(`v${from + i}`))]);
/** Redis' HLL of visitors `from` to `to` - 1 (sparse below about 2,000, dense above). */
async function hll(from: number, to: number): Promise<Buffer> {
  await redis.del('hll');
  for (let v = from; v < to; v += 1_000)
    await redis.pfadd('hll', ...Array.from({ length: Math.min(1_000, to - v) }, (_, i) => member(`v${v + i}`)));
  return Buffer.concat([Buffer.from('H'), (await redis.getBuffer('hll'))!]);
}

describe('countUnions', () => {
  it('answers what one union call of all the groups answers, in calls of at most the limits', async () => {
    const groups: Buffer[][] = [
      [],
      [exact(0, 5)],
      [exact(0, 5), exact(3, 9)],
      // Exact sketches only, 1,200 distinct members: counted exactly, however many.
      Array.from({ length: 60 }, (_, i) => exact(i * 20, i * 20 + 40)),
      // HLLs, sparse and dense, among exact sketches: chunks of chunks.
      [
        ...Array.from({ length: 30 }, (_, i) => exact(i * 50, i * 50 + 300)),
        await hll(0, 400),
        await hll(10_000, 15_000),
        await hll(1_000, 2_500),
        ...Array.from({ length: 30 }, (_, i) => exact(20_000 + i * 7, 20_000 + i * 7 + 200)),
      ],
      // Chunks of exact sketches only whose union passes the threshold, among HLLs.
      [await hll(50_000, 50_500), ...Array.from({ length: 40 }, (_, i) => exact(60_000 + i * 100, 60_000 + i * 100 + 100))],
      [await hll(0, 10)],
    ];
    const once = (await sketches.union('S', groups, false)).map(({ count, exact }) => ({ count, exact }));
    expect(once.map((c) => c.exact)).toEqual([true, true, true, true, false, false, false]);
    expect(once.slice(0, 4).map((c) => c.count)).toEqual([0, 5, 9, 1_220]);

    for (const limits of [UNION_CALL_LIMITS, { blobs: 4, bytes: 4_096 }, { blobs: 2, bytes: 1 }, { blobs: 16, bytes: 30_000 }]) {
      const union = vi.spyOn(sketches, 'union');
      expect(await countUnions(sketches, 'S', groups, limits)).toEqual(once);
      for (const [, g] of union.mock.calls) {
        const blobs = g.flat();
        // A call past the limits carries two blobs at most (chunks are of two at least) or one group of one blob.
        if (blobs.length > 2 || g.length > 1) {
          expect(blobs.length).toBeLessThanOrEqual(limits.blobs);
          expect(blobs.reduce((n, b) => n + b.length, 0)).toBeLessThanOrEqual(limits.bytes);
        }
      }
      union.mockRestore();
    }
  });

  it('leaves a malformed exact sketch to SKETCH_UNION, which refuses it as in one call', async () => {
    const bad = [...Array.from({ length: 70 }, (_, i) => exact(i, i + 1)), Buffer.from('X1234567')];
    await expect(sketches.union('S', [bad], false)).rejects.toThrow(/TALLY_ERR_SKETCH exact sketch of 7 bytes/);
    await expect(countUnions(sketches, 'S', [bad])).rejects.toThrow(/TALLY_ERR_SKETCH exact sketch of 7 bytes/);
  });
});
