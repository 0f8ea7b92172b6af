import type { RowDeltas } from '@tally/schema';
import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BucketEraser, BucketStore } from './index';
import { outboxFields } from './test-fixtures';
import { testRules } from './test-store';

// OUTBOX_MERGE (FOLD with merge, READ_OUTBOX's fence, docs/DESIGN.md "Fold"): the counts folded into a row since a
// writer last read it added into the outbox entries of the first such fold (the row's merge seq), one per day and metric.
let redis: Redis;
let merged: BucketStore;
let plain: BucketStore;
useRedis(
  (r) => {
    redis = r;
    merged = new BucketStore({ redis: r, rules: testRules, prefix: 't', mergeOutbox: true });
    plain = new BucketStore({ redis: r, rules: testRules, prefix: 't' });
  },
  { flushEachTest: true },
);

const P = 'S#product#P'; // flushed every 60 min (testRules)
const V = 'S#visitor#V'; // idle flush
const deltas = (rows: Record<string, Record<string, number | bigint>>): RowDeltas =>
  new Map(Object.entries(rows).map(([pk, f]) => [pk, new Map(Object.entries(f).map(([k, v]) => [k, BigInt(v)]))]));

/**
 * One bucket of `rows` applied at `at`, sealed and folded completely by `store`: bucket `at` when the store has no
 * open bucket or the last call was for `at - 1000` (its seal, at `at`, opened it).
 */
async function bucket(store: BucketStore, at: number, rows: Record<string, Record<string, number | bigint>>) {
  await store.apply('S', `b${at}`, deltas(rows), { now: at, dedupeTtlSeconds: 60 });
  expect(await store.seal('S', { now: at + 1000, minAgeMs: 0 })).toBe(at);
  await store.foldSealed('S', { now: at + 1001 });
}

/** An outbox entry's fields: `field` and its high limbs `field|1`, `field|2`, each present only when not 0. */
const limbs = (field: string, v: bigint): Record<string, string> => {
  const out: Record<string, string> = {};
  ['', '|1', '|2'].forEach((suffix, k) => {
    const limb = k < 2 ? (v / 10n ** BigInt(15 * k)) % 10n ** 15n : v / 10n ** 30n;
    if (limb !== 0n) out[field + suffix] = String(limb);
  });
  return out;
};

const outbox = (pk: string) => redis.hgetall(merged.keys.outbox('S', pk));
const mergeSeq = (pk: string) => redis.hget(merged.keys.mergeSeqs('S'), pk);
/** The row's counts in Redis by day and metric, as a query's snapshot sees them (every bucket and the outbox). */
const live = async (pk: string) => {
  const [row] = await merged.snapshot('S', [pk]);
  const out: Record<string, bigint> = {};
  for (const e of row!.entries) out[`${e.dayKey}|${e.metric}`] = (out[`${e.dayKey}|${e.metric}`] ?? 0n) + e.value;
  return out;
};

describe('OUTBOX_MERGE', () => {
  it('adds the counts folded into a row since its last read into the entries of the first such fold, which keep its seq, exactly', async () => {
    await bucket(merged, 1000, { [P]: { '2023-123|v': 1, '2023-123|o': 2 } });
    expect(await mergeSeq(P)).toBe('1000');
    // A day and metric the row's entries of seq 1000 do not have yet gets one.
    await bucket(merged, 2000, { [P]: { '2023-123|v': 3, '2023-124|v': 5 } });
    expect(await outbox(P)).toEqual({ '1000|2023-123|v': '4', '1000|2023-123|o': '2', '1000|2023-124|v': '5' });
    expect((await merged.storeBacklog('S')).entries).toBe(3);
    // Past 2^53 and across the 10^15 limb: the sum is exact, carried into the next limb.
    const big = 2n ** 53n + 1n;
    await bucket(merged, 3000, { [P]: { '2023-123|v': big, '2023-124|v': 10n ** 15n - 5n } });
    await bucket(merged, 4000, { [P]: { '2023-123|v': big } });
    expect(await live(P)).toEqual({ '2023-123|v': 4n + 2n * big, '2023-123|o': 2n, '2023-124|v': 10n ** 15n });
    // 10^15 is one limb `|1` = 1, no low limb: an entry the running count no longer counts (ACK deletes no low limb).
    expect(await outbox(P)).toEqual({
      ...limbs('1000|2023-123|v', 4n + 2n * big),
      '1000|2023-123|o': '2',
      '1000|2023-124|v|1': '1',
    });
    expect((await merged.storeBacklog('S')).entries).toBe(2);
    expect(await mergeSeq(P)).toBe('1000');
    const read = await merged.readOutbox('S', P);
    expect(read.entries.map((e) => [e.field, e.seq, e.value]).sort()).toEqual([
      ['1000|2023-123|o', 1000, 2n],
      ['1000|2023-123|v', 1000, 4n + 2n * big],
      ['1000|2023-124|v', 1000, 10n ** 15n],
    ]);
    expect(await mergeSeq(P)).toBeNull();
    expect(await merged.ackOutbox('S', P, outboxFields(read), 5000)).toBe(0);
    expect((await merged.storeBacklog('S')).entries).toBe(0);
    expect(await redis.exists(merged.keys.mergeSeqs('S'))).toBe(0);
  });

  it('makes a count of its own rather than a sum past 38 digits, and adds the next ones as before', async () => {
    const six = 6n * 10n ** 37n;
    await bucket(merged, 1000, { [P]: { '2023-123|v': six } });
    await bucket(merged, 2000, { [P]: { '2023-123|v': six } });
    await bucket(merged, 3000, { [P]: { '2023-123|v': 7 } });
    // 12 × 10^37 has 39 digits: bucket 2000's count is an entry of its own; bucket 3000's is added into seq 1000's.
    expect(await outbox(P)).toEqual({ ...limbs('1000|2023-123|v', six + 7n), ...limbs('2000|2023-123|v', six) });
    expect(await mergeSeq(P)).toBe('1000');
    expect(await live(P)).toEqual({ '2023-123|v': 2n * six + 7n });
  });

  it("fences a writer's read: a fold after it makes new entries, which the read's ack leaves whole", async () => {
    await bucket(merged, 1000, { [V]: { '2023-123|v': 1 } });
    const read = await merged.readOutbox('S', V);
    expect(read.entries.map((e) => [e.field, e.value])).toEqual([['1000|2023-123|v', 1n]]);
    // The writer writes entry 1000 (value 1) now: a count added into it would be acked without being written.
    expect(await mergeSeq(V)).toBeNull();
    await bucket(merged, 2000, { [V]: { '2023-123|v': 2 } });
    await bucket(merged, 3000, { [V]: { '2023-123|v': 4 } });
    expect(await outbox(V)).toEqual({ '1000|2023-123|v': '1', '2000|2023-123|v': '6' });
    expect(await merged.ackOutbox('S', V, outboxFields(read), 4000)).toBe(1);
    expect(await outbox(V)).toEqual({ '2000|2023-123|v': '6' });
    expect(await mergeSeq(V)).toBe('2000');
    expect((await merged.storeBacklog('S')).entries).toBe(1);
    // A read that finds bucket 2000 folded through hands its entries out and ends the merge seq with them.
    const next = await merged.readOutbox('S', V);
    expect(next.entries.map((e) => [e.field, e.value])).toEqual([['2000|2023-123|v', 6n]]);
    expect(await mergeSeq(V)).toBeNull();
  });

  it('keeps the merge seq through a read that finds its bucket not folded through', async () => {
    await bucket(merged, 1000, { [V]: { '2023-123|v': 1 } });
    // Bucket 2000 of V and Q, only V's row folded: foldedThrough stays 1000, below V's merge seq 2000.
    await merged.apply('S', 'b2000', deltas({ [V]: { '2023-123|v': 2 }, 'S#visitor#Q': { '2023-123|v': 1 } }), {
      now: 2000,
      dedupeTtlSeconds: 60,
    });
    const first = await merged.readOutbox('S', V);
    await merged.ackOutbox('S', V, outboxFields(first), 2001);
    await merged.seal('S', { now: 3000, minAgeMs: 0 });
    await merged.foldVisitedEach([{ store: 'S', seq: 2000, pks: [V] }], 3001);
    expect(await mergeSeq(V)).toBe('2000');
    const read = await merged.readOutbox('S', V);
    expect(read.foldedThrough).toBe(1000);
    expect(read.entries).toEqual([]);
    expect(await mergeSeq(V)).toBe('2000');
    await merged.foldSealed('S', { now: 3002 });
    await bucket(merged, 3000, { [V]: { '2023-123|v': 4 } });
    expect(await outbox(V)).toEqual({ '2000|2023-123|v': '6' });
  });

  it('writes an entry added into as soon as its own bucket is folded through: the bucket added last need not be', async () => {
    const H = 3_600_000;
    await bucket(merged, 10 * H, { [P]: { '2023-123|v': 1 } });
    // Bucket 10 h + 1000 holds P and Q; P's row is folded, Q's not yet (another folder's call), so the bucket is not
    // folded through.
    const second = 10 * H + 1000;
    await merged.apply('S', 'second', deltas({ [P]: { '2023-123|v': 2 }, 'S#product#Q': { '2023-123|v': 1 } }), {
      now: second,
      dedupeTtlSeconds: 60,
    });
    expect(await merged.seal('S', { now: second + 1, minAgeMs: 0 })).toBe(second);
    await merged.foldVisitedEach([{ store: 'S', seq: second, pks: [P] }], second + 2);
    expect(await redis.get(merged.keys.folded('S'))).toBe(String(10 * H));
    // The row falls due at 11 h (every 60 min): its flush finds the entry, with the count of the second bucket in it.
    expect(await merged.flushTime('S', P)).toBe(11 * H);
    const read = await merged.readOutbox('S', P);
    expect(read.entries.map((e) => [e.field, e.value])).toEqual([[`${10 * H}|2023-123|v`, 3n]]);
    expect(await merged.ackOutbox('S', P, outboxFields(read), 11 * H)).toBe(0);
    // Written and clean: not left to wait for the next hour's flush.
    expect(await merged.flushTime('S', P)).toBeUndefined();
    expect(await redis.zscore(merged.keys.dirty('S'), P)).toBeNull();
  });

  it("does FOLD's Redis work in the bucket's rows and counts, whatever the size of the outbox", async () => {
    /** The commands a fold of one count into a row of `n` unread entries sends to that row's outbox and merge seq. */
    const foldWork = async (n: number, at: number) => {
      await redis.flushall();
      const counts: Record<string, number> = {};
      for (let i = 0; i < n; i++) counts[`2023-123|pv#P${i}`] = 1;
      await bucket(merged, at, { [V]: counts });
      expect(await redis.hlen(merged.keys.outbox('S', V))).toBe(n);
      const monitor = await redis.monitor();
      const seen: string[][] = [];
      const marker = `marker-${at}`;
      const done = new Promise<void>((resolve) =>
        monitor.on('monitor', (_time: string, args: string[]) => {
          if (args[0]?.toLowerCase() === 'echo' && args[1] === marker) resolve();
          else seen.push(args);
        }),
      );
      try {
        await bucket(merged, at + 1000, { [V]: { '2023-123|pv#P0': 1 } });
        await redis.echo(marker);
        await done;
      } finally {
        monitor.disconnect();
      }
      const name = { [merged.keys.outbox('S', V)]: 'outbox', [merged.keys.mergeSeqs('S')]: 'merge seqs' };
      // Command, key, and the fields it names (a whole-hash read names none: refused below).
      return seen.flatMap((args) => (name[args[1] ?? ''] ? [[args[0]!.toLowerCase(), name[args[1]!], args.length - 2]] : []));
    };
    const small = await foldWork(10, 1000);
    const large = await foldWork(2_000, 1000);
    expect(large).toEqual(small);
    for (const [command] of large) expect(['hgetall', 'hkeys', 'hvals', 'hlen', 'hscan']).not.toContain(command);
    // The row's merge seq, its entry's limbs, and the sum written back.
    expect(large).toEqual([
      ['hmget', 'merge seqs', 1],
      ['hmget', 'outbox', 3],
      ['hset', 'outbox', 2],
    ]);
    expect(await redis.hget(merged.keys.outbox('S', V), '1000|2023-123|pv#P0')).toBe('2');
  });

  it('keeps working on entries folded without merge (an earlier version), and past a merge seq that is no seq', async () => {
    await bucket(plain, 1000, { [P]: { '2023-123|v': 1 } });
    await bucket(merged, 2000, { [P]: { '2023-123|v': 2 } });
    await bucket(merged, 3000, { [P]: { '2023-123|v': 4 } });
    expect(await outbox(P)).toEqual({ '1000|2023-123|v': '1', '2000|2023-123|v': '6' });
    await redis.hset(merged.keys.mergeSeqs('S'), P, 'garbage');
    await bucket(merged, 4000, { [P]: { '2023-123|v': 8 } });
    expect(await outbox(P)).toEqual({ '1000|2023-123|v': '1', '2000|2023-123|v': '6', '4000|2023-123|v': '8' });
    expect(await mergeSeq(P)).toBe('4000');
    expect((await merged.storeBacklog('S')).entries).toBe(3);
  });

  it('refuses the fold whole, writing nothing, when the merge seqs are of another type or an entry to add into is no count', async () => {
    const dump = async () =>
      Object.fromEntries(await Promise.all((await redis.keys('*')).sort().map(async (k) => [k, await redis.dump(k)])));
    const message = (p: Promise<unknown>) =>
      p.then(
        () => '',
        (e: Error) => e.message,
      );
    await bucket(merged, 1000, { [P]: { '2023-123|v': 1 }, [V]: { '2023-123|v': 1 } });
    await merged.apply('S', 'b2000', deltas({ [P]: { '2023-123|v': 2 }, [V]: { '2023-123|v': 2 } }), { now: 2000, dedupeTtlSeconds: 60 });
    await merged.seal('S', { now: 3000, minAgeMs: 0 });
    await redis.hset(merged.keys.outbox('S', V), '1000|2023-123|v', '1x');
    let before = await dump();
    expect(await message(merged.foldSealed('S', { now: 3001 }))).toMatch(/TALLY_ERR_NOT_A_COUNT .*1000\|2023-123\|v/);
    expect(await dump()).toEqual(before);
    await redis.hset(merged.keys.outbox('S', V), '1000|2023-123|v', '1');
    const seqs = await redis.hgetall(merged.keys.mergeSeqs('S'));
    await redis.del(merged.keys.mergeSeqs('S'));
    await redis.set(merged.keys.mergeSeqs('S'), 'not a hash');
    before = await dump();
    expect(await message(merged.foldSealed('S', { now: 3001 }))).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);
    await redis.del(merged.keys.mergeSeqs('S'));
    await redis.hset(merged.keys.mergeSeqs('S'), seqs);
    await merged.foldSealed('S', { now: 3001 });
    expect(await outbox(P)).toEqual({ '1000|2023-123|v': '3' });
    expect(await outbox(V)).toEqual({ '1000|2023-123|v': '3' });
  });

  it('an erased row loses its merge seq with its outbox', async () => {
    await bucket(merged, 1000, { [V]: { '2023-123|v': 1 }, [P]: { '2023-123|v': 1 } });
    expect(await mergeSeq(V)).toBe('1000');
    await new BucketEraser({ redis, buckets: merged }).eraseRow('S', V, { until: 10_000, ttlSeconds: 60, now: 5000 });
    expect(await redis.exists(merged.keys.outbox('S', V))).toBe(0);
    expect(await redis.hgetall(merged.keys.mergeSeqs('S'))).toEqual({ [P]: '1000' });
  });

  it('switched off, folds as before: an entry per bucket and metric, no merge seq, and a read writes nothing', async () => {
    await bucket(plain, 1000, { [P]: { '2023-123|v': 1 } });
    await bucket(plain, 2000, { [P]: { '2023-123|v': 2 } });
    expect(await outbox(P)).toEqual({ '1000|2023-123|v': '1', '2000|2023-123|v': '2' });
    expect(await redis.exists(plain.keys.mergeSeqs('S'))).toBe(0);
    expect((await plain.storeBacklog('S')).entries).toBe(2);
    const dump = async () =>
      Object.fromEntries(await Promise.all((await redis.keys('*')).sort().map(async (k) => [k, await redis.dump(k)])));
    const before = await dump();
    const read = await plain.readOutbox('S', P);
    expect(await dump()).toEqual(before);
    expect(read.entries.map((e) => [e.field, e.value])).toEqual([
      ['1000|2023-123|v', 1n],
      ['2000|2023-123|v', 2n],
    ]);
  });
});
