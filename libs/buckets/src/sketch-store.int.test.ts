import { distinctMember, type DistinctAdds } from '@tally/schema';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EXACT_THRESHOLD, SketchStore } from './index';

let server: RedisHandle;
let redis: Redis;
let sketches: SketchStore;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url);
  sketches = new SketchStore({ redis, prefix: 't' });
});
afterAll(async () => {
  await redis?.quit();
  await server?.stop();
});
beforeEach(async () => {
  await redis.flushall();
});

/** Adds visitors `V<from>`..`V<to - 1>` to row `pk`'s sketch of `day`, in batches of `batch`. */
async function addVisitors(pk: string, day: string, from: number, to: number, batch = 10_000): Promise<void> {
  for (let a = from; a < to; a += batch) {
    const members = new Set<string>();
    for (let v = a; v < Math.min(to, a + batch); v++) members.add(distinctMember(`V${v}`));
    const adds: DistinctAdds = new Map([[pk, new Map([[`${day}|uv`, members]])]]);
    await sketches.add('S', adds);
  }
}

const countOf = async (pk: string) => {
  const [live] = await sketches.read('S', [pk]);
  const [r] = await sketches.union('S', [live!.map((s) => s.blob)], false);
  return r!.count;
};

describe('sketches', () => {
  it('are exact up to the threshold, whatever the batches and repeats', async () => {
    for (const n of [1, 2, 17, 150, 299, EXACT_THRESHOLD]) {
      const pk = `S#product#N${n}`;
      await addVisitors(pk, '2026-100', 0, n, 7);
      await addVisitors(pk, '2026-100', 0, n, 50); // every visitor again
      const [live] = await sketches.read('S', [pk]);
      expect(live).toHaveLength(1);
      expect(live![0]!.blob.subarray(0, 1).toString()).toBe('X');
      expect(await countOf(pk)).toBe(n);
    }
  });

  it('unions exactly across days below the threshold, and replays change nothing', async () => {
    await addVisitors('S', '2026-100', 0, 200);
    await addVisitors('S', '2026-101', 100, 280);
    const before = (await sketches.read('S', ['S']))[0]!;
    await addVisitors('S', '2026-101', 100, 280);
    const after = (await sketches.read('S', ['S']))[0]!;
    expect(after.map((s) => s.scard).sort()).toEqual(before.map((s) => s.scard).sort());
    const [u] = await sketches.union('S', [after.map((s) => s.blob)], true);
    expect(u!.count).toBe(280);
    expect(u!.exact).toBe(true);
    expect(u!.blob.subarray(0, 1).toString()).toBe('X');
    expect(u!.blob.length).toBe(1 + 8 * 280);
  });

  it('says which unions are estimates: any HyperLogLog in a group, even of a day past the threshold among exact ones', async () => {
    await addVisitors('S', '2026-100', 0, 100);
    await addVisitors('S', '2026-101', 0, EXACT_THRESHOLD + 1);
    const [small, large] = (await sketches.read('S', ['S']))[0]!.toSorted((a, b) => a.dayKey.localeCompare(b.dayKey));
    const r = await sketches.union('S', [[small!.blob], [large!.blob], [small!.blob, large!.blob]], false);
    expect(r.map((u) => u.exact)).toEqual([true, false, false]);
    expect(r[0]!.count).toBe(100);
  });

  it('acks a sketch only when it did not change since it was read', async () => {
    await addVisitors('S', '2026-100', 0, 10);
    const read1 = (await sketches.read('S', ['S']))[0]!;
    await addVisitors('S', '2026-100', 10, 11);
    expect(await sketches.ack('S', 'S', read1)).toBe(0);
    const read2 = (await sketches.read('S', ['S']))[0]!;
    await addVisitors('S', '2026-100', 0, 11); // nothing new
    expect(await sketches.ack('S', 'S', read2)).toBe(1);
    expect((await sketches.read('S', ['S']))[0]).toEqual([]);
    expect(await redis.keys('*')).toEqual([]);
  });

  it('does not ack a sketch that another flush acked and a new batch re-created with as many members', async () => {
    // Two flushes of one row at once (a job whose lock lapsed while Redis restarted runs again elsewhere): both
    // read {V0}; one writes it and acks; a batch adds V1; the other's ack must keep V1 for the next flush.
    await addVisitors('S', '2026-100', 0, 1);
    const first = (await sketches.read('S', ['S']))[0]!;
    const second = (await sketches.read('S', ['S']))[0]!;
    expect(await sketches.ack('S', 'S', second)).toBe(1);
    await addVisitors('S', '2026-100', 1, 2);
    expect(await sketches.ack('S', 'S', first)).toBe(0);
    const live = (await sketches.read('S', ['S']))[0]!;
    expect(live.map((s) => s.blob)).toEqual([Buffer.concat([Buffer.from('X'), Buffer.from(distinctMember('V1'), 'latin1')])]);
    // Above the threshold the HLL's registers tell: a re-created exact sketch is never taken for the HLL read.
    await redis.flushall();
    await addVisitors('S', '2026-100', 0, EXACT_THRESHOLD + 5);
    const hll = (await sketches.read('S', ['S']))[0]!;
    expect(await sketches.ack('S', 'S', (await sketches.read('S', ['S']))[0]!)).toBe(1);
    await addVisitors('S', '2026-100', 1_000, 1_001);
    expect(await sketches.ack('S', 'S', hll)).toBe(0);
    expect(await countOf('S')).toBe(1);
  });

  it('adds nothing when any key of the batch holds another type (checked before the first write)', async () => {
    const field = '2026-100|uv';
    const adds: DistinctAdds = new Map([
      ['S', new Map([[field, new Set([distinctMember('V1')])]])],
      ['S#product#P1', new Map([[field, new Set([distinctMember('V2')])]])],
    ]);
    const tag = sketches.keys.tag('S');
    const planted: Array<[string, () => Promise<unknown>]> = [
      ['exact set', () => redis.set(`${tag}us:S#product#P1|${field}`, 'x')],
      ['HLL', () => redis.set(`${tag}uh:S#product#P1|${field}`, 'not an HLL')],
      ['HLL of another type', () => redis.sadd(`${tag}uh:S#product#P1|${field}`, 'x')],
      ['row set', () => redis.hset(`${tag}ur:S#product#P1`, 'a', '1')],
    ];
    for (const [, plant] of planted) {
      await redis.flushall();
      await plant();
      const before = await redis.keys('*');
      await expect(sketches.add('S', adds)).rejects.toThrow(/WRONGTYPE/);
      expect(await redis.keys('*')).toEqual(before);
    }
  });

  it('leaves every key as it was when a row set or an HLL holds another type (what it added is taken back)', async () => {
    const tag = sketches.keys.tag('S');
    const snapshot = async () => {
      const out: string[] = [];
      for (const key of (await redis.keys('*')).sort()) {
        const type = await redis.type(key);
        const value =
          type === 'set'
            ? (await redis.smembersBuffer(key)).map((b) => b.toString('hex')).sort()
            : type === 'hash'
              ? JSON.stringify(await redis.hgetall(key))
              : (await redis.getBuffer(key))?.toString('hex');
        out.push(`${key} ${type} ${String(value)}`);
      }
      return out;
    };
    const one = (v: string) => new Set([distinctMember(v)]);
    // Row S already has its day-100 sketch; P2's is past the threshold (an HLL).
    const setUp = async () => {
      await redis.flushall();
      await addVisitors('S', '2026-100', 0, 1);
      await addVisitors('S#product#P2', '2026-100', 0, EXACT_THRESHOLD + 5);
    };
    const adds: DistinctAdds = new Map([
      ['S', new Map([['2026-100|uv', one('V1')]])], // its field already in the row set: nothing to take back
      ['S#product#P0', new Map([['2026-100|uv', one('V2')]])], // a new field: taken back
      ['S#product#P2', new Map([['2026-100|uv', one('V3')]])],
      [
        'S#product#P3',
        new Map([
          ['2026-100|uv', one('V4')],
          ['2026-101|uv', one('V4')],
        ]),
      ],
      ['S#product#P9', new Map([['2026-100|uv', one('V5')]])],
    ]);
    const planted: Array<() => Promise<unknown>> = [
      () => redis.hset(`${tag}ur:S#product#P9`, 'a', '1'), // the last row's set, after rows already added to
      () => redis.hset(`${tag}ur:S#product#P3`, 'a', '1'), // the row of two fields
      () => redis.set(`${tag}uh:S#product#P2|2026-100|uv`, 'not an HLL'), // an HLL of a sketch past the threshold
    ];
    for (const plant of planted) {
      await setUp();
      await plant();
      const before = await snapshot();
      await expect(sketches.add('S', adds)).rejects.toThrow(/WRONGTYPE/);
      expect(await snapshot()).toEqual(before);
    }
    // Once nothing is planted, the batch goes in whole.
    await setUp();
    await sketches.add('S', adds);
    const live = await sketches.read('S', ['S', 'S#product#P0', 'S#product#P3', 'S#product#P9']);
    expect(live.map((r) => r.map((s) => `${s.field} ${s.scard}`).sort())).toEqual([
      ['2026-100|uv 2'],
      ['2026-100|uv 1'],
      ['2026-100|uv 1', '2026-101|uv 1'],
      ['2026-100|uv 1'],
    ]);
  });

  it('refuses a corrupt blob before writing anything', async () => {
    await expect(sketches.union('S', [[Buffer.from('Xabc')]], false)).rejects.toThrow(/TALLY_ERR_SKETCH/);
    await expect(sketches.union('S', [[Buffer.from('HYLLxxxxxxxxxxxxxxxxx')]], false)).rejects.toThrow(/TALLY_ERR_SKETCH/);
    expect(await redis.keys('*')).toEqual([]);
  });

  it('have a standard error under 1% above the threshold, against exact counts over 1,000,000 visitors', async () => {
    // 1,000,000 distinct visitors: 100 row sketches of 301..19,000 visitors (disjoint ranges), then their union.
    const sizes = Array.from({ length: 100 }, (_, i) => 301 + Math.round((i / 99) * (19_000 - 301)));
    const total = sizes.reduce((a, b) => a + b, 0);
    sizes[99]! += 1_000_000 - total; // exactly 1,000,000 in all
    let from = 0;
    const errors: number[] = [];
    const blobs: Buffer[] = [];
    for (const [i, n] of sizes.entries()) {
      const pk = `S#product#P${i}`;
      await addVisitors(pk, '2026-100', from, from + n);
      from += n;
      const [live] = await sketches.read('S', [pk]);
      expect(live![0]!.blob.subarray(0, 1).toString()).toBe('H');
      blobs.push(live![0]!.blob);
      const [r] = await sketches.union('S', [[live![0]!.blob]], false);
      errors.push((r!.count - n) / n);
    }
    expect(from).toBe(1_000_000);
    const rms = Math.sqrt(errors.reduce((s, e) => s + e * e, 0) / errors.length);
    const [all] = await sketches.union('S', [blobs], true);
    const unionError = Math.abs(all!.count - 1_000_000) / 1_000_000;
    console.log(
      `sketch standard error over ${sizes.length} sketches (1,000,000 visitors): ${(rms * 100).toFixed(3)}%; union of all: ${all!.count} (${(unionError * 100).toFixed(3)}%)`,
    );
    expect(rms).toBeLessThanOrEqual(0.01);
    // One estimate of the union, 3 standard errors (0.81% each) at most.
    expect(unionError).toBeLessThanOrEqual(0.0243);
    expect(all!.blob.subarray(0, 5).toString()).toBe('HHYLL');
  }, 120_000);
});
