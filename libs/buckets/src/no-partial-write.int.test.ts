import type { RowDeltas } from '@tally/schema';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BucketsError, BucketStore } from './index';
import { runScript } from './script-table';
import { APPLY } from './scripts';
import { outboxFields } from './test-fixtures';
import { useBucketStore } from './test-store';

let redis: Redis;
let store: BucketStore;

/** One order of the documented maximum value (1000000000000, scale 2) in minor units. */
const MAX_UNITS = 10n ** 14n;
const D38 = 10n ** 38n;

const rows = (r: Record<string, Record<string, bigint | number>>): RowDeltas =>
  new Map(Object.entries(r).map(([pk, f]) => [pk, new Map(Object.entries(f))]));

/** Every key and value of the Redis database, to compare before and after a refused script. */
async function dump(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const key of (await redis.keys('*')).sort()) {
    const type = await redis.type(key);
    if (type === 'string') out[key] = await redis.get(key);
    else if (type === 'hash') out[key] = await redis.hgetall(key);
    else if (type === 'set') out[key] = (await redis.smembers(key)).sort();
    else if (type === 'list') out[key] = await redis.lrange(key, 0, -1);
    else if (type === 'zset') out[key] = await redis.zrange(key, 0, -1, 'WITHSCORES');
  }
  return out;
}

const total = async (pk: string, metric: string) => {
  const [row] = await store.snapshot('S', [pk]);
  return row!.entries.filter((e) => e.metric === metric).reduce((s, e) => s + e.value, 0n);
};

useBucketStore((s, r) => {
  store = s;
  redis = r;
});

describe('sums beyond 64 bits (issue: 300 batches of 1000 maximum orders)', () => {
  it('keeps 300 x 1000 x 1000000000000.00 exact in the open bucket and through seal and fold', async () => {
    const perBatch = 1000n * MAX_UNITS;
    for (let b = 0; b < 300; b++) {
      const r = await store.apply('S', `b${b}`, rows({ S: { '2026-336|r': perBatch, '2026-336|o': 1000 } }), {
        now: 1000,
        dedupeTtlSeconds: 60,
      });
      expect(r.applied).toBe(true);
    }
    // 300000000000000000.00 in minor units: above int64, so a single HINCRBY field would have overflowed.
    expect(await total('S', 'r')).toBe(30_000_000_000_000_000_000n);
    expect(await total('S', 'o')).toBe(300_000n);
    await store.seal('S', { now: 2000, minAgeMs: 0 });
    await store.foldSealed('S', { now: 2001 });
    const out = await store.readOutbox('S', 'S');
    expect(out.entries.map((e) => [e.metric, e.value]).sort()).toEqual([
      ['o', 300_000n],
      ['r', 30_000_000_000_000_000_000n],
    ]);
    expect(await total('S', 'r')).toBe(30_000_000_000_000_000_000n);
    // The ack deletes the count with its limbs.
    expect(await store.ackOutbox('S', 'S', outboxFields(out), 3000)).toBe(0);
    expect(await redis.exists('t:{S}:o:S')).toBe(0);
  });

  it('holds a bucket count up to 38 digits and refuses, whole and with nothing written, the batch that would pass it', async () => {
    const almost = D38 - 1n - 5n;
    await store.apply('S', 'a', rows({ S: { '2026-336|r': almost } }), { now: 1000, dedupeTtlSeconds: 60 });
    await store.apply('S', 'b', rows({ S: { '2026-336|r': 5n } }), { now: 1000, dedupeTtlSeconds: 60 });
    expect(await total('S', 'r')).toBe(D38 - 1n);
    const before = await dump();
    const err = await store
      .apply('S', 'c', rows({ 'S#product#P1': { '2026-336|r': 7 }, S: { '2026-336|o': 1, '2026-336|r': 1n } }), {
        now: 1000,
        dedupeTtlSeconds: 60,
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BucketsError);
    expect((err as BucketsError).code).toBe('TALLY_ERR_SUM_OVERFLOW');
    expect((err as Error).message).toMatch(/batch c of store S not applied \(nothing written\): TALLY_ERR_SUM_OVERFLOW S 2026-336\|r/);
    // Nothing of the batch landed, not even the rows before the failing one, nor the dedupe record.
    expect(await dump()).toEqual(before);
    expect(await redis.exists('t:{S}:d:c')).toBe(0);
  });

  it('refuses a negative or malformed delta before writing', async () => {
    await store.apply('S', 'a', rows({ S: { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 });
    const before = await dump();
    for (const bad of [-1, -(10n ** 20n)]) {
      const err = await store
        .apply('S', `x${bad}`, rows({ 'S#product#P': { '2026-336|v': 2 }, S: { '2026-336|v': bad } }), { now: 1000, dedupeTtlSeconds: 60 })
        .catch((e: unknown) => e);
      expect((err as BucketsError).code).toBe('TALLY_ERR_NOT_A_COUNT');
    }
    expect(await dump()).toEqual(before);
  });

  it('reads a count written as one plain field by earlier versions (no limbs) and carries it on', async () => {
    await redis.set('t:{S}:epoch', '1000');
    await redis.hset('t:{S}:b:1000:S', '2026-336|r', '9000000000000000000');
    await redis.sadd('t:{S}:r:1000', 'S');
    await store.apply('S', 'a', rows({ S: { '2026-336|r': 9_000_000_000_000_000_000n } }), { now: 1000, dedupeTtlSeconds: 60 });
    expect(await total('S', 'r')).toBe(18_000_000_000_000_000_000n);
    // A limb of 0 is not stored (absent means 0).
    expect(await redis.hgetall('t:{S}:b:1000:S')).toEqual({ '2026-336|r|1': '18000' });
  });

  it('carries out of the low limb when a HINCRBY would reach 10^15, and adds to a count with no low limb', async () => {
    await store.apply('S', 'a', rows({ S: { '2026-336|r': 10n ** 15n - 1n } }), { now: 1000, dedupeTtlSeconds: 60 });
    await store.apply('S', 'b', rows({ S: { '2026-336|r': 1 } }), { now: 1000, dedupeTtlSeconds: 60 });
    expect(await redis.hgetall('t:{S}:b:1000:S')).toEqual({ '2026-336|r|1': '1' });
    await store.apply('S', 'c', rows({ S: { '2026-336|r': 7 } }), { now: 1000, dedupeTtlSeconds: 60 });
    expect(await redis.hgetall('t:{S}:b:1000:S')).toEqual({ '2026-336|r': '7', '2026-336|r|1': '1' });
    expect(await total('S', 'r')).toBe(10n ** 15n + 7n);
  });

  it('takes back every HINCRBY of a refused batch: added to, created in an existing row, and in a new row', async () => {
    await store.apply('S', 'a', rows({ S: { '2026-336|v': 5 }, 'S#product#P': { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 });
    // A corrupt stored count (negative: a HINCRBY would take it) after the rows the batch adds to first.
    await redis.hset('t:{S}:b:1000:S#visitor#V', '2026-336|v', '-5');
    const before = await dump();
    const err = await store
      .apply(
        'S',
        'b',
        rows({
          S: { '2026-336|v': 2, '2026-337|v': 3 },
          'S#product#P': { '2026-336|v': 4 },
          'S#product#Q': { '2026-336|v': 6 },
          'S#visitor#V': { '2026-336|v': 1 },
        }),
        { now: 1000, dedupeTtlSeconds: 60 },
      )
      .catch((e: unknown) => e);
    expect((err as BucketsError).code).toBe('TALLY_ERR_NOT_A_COUNT');
    expect(await dump()).toEqual(before);
  });
});

describe('no script fails after its first write', () => {
  it('refuses the whole apply under OOM (noeviction) before writing, and applies it once memory is back', async () => {
    await store.apply('S', 'a', rows({ S: { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 });
    const before = await dump();
    await redis.config('SET', 'maxmemory-policy', 'noeviction');
    await redis.config('SET', 'maxmemory', '1');
    try {
      const err = await store
        .apply('S', 'b', rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 })
        .catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/OOM/);
      for (const run of [() => store.seal('S', { now: 5000, minAgeMs: 0 }), () => store.ackOutbox('S', 'S', [], 5000)]) {
        expect(((await run().catch((e: unknown) => e)) as Error).message).toMatch(/OOM/);
      }
      // Read-only scripts still answer.
      expect(await total('S', 'v')).toBe(1n);
    } finally {
      await redis.config('SET', 'maxmemory', '0');
    }
    expect(await dump()).toEqual(before);
    expect((await store.apply('S', 'b', rows({ S: { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 })).applied).toBe(true);
    expect(await total('S', 'v')).toBe(2n);
  });

  it('refuses a key of the wrong type before writing (apply, fold, ack)', async () => {
    const V = 'S#visitor#V';
    await store.apply('S', 'a', rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 1 }, [V]: { '2026-336|v': 1 } }), {
      now: 1000,
      dedupeTtlSeconds: 60,
    });
    await redis.set('t:{S}:b:1000:S#product#P', 'not a hash');
    let before = await dump();
    expect(
      (
        (await store
          .apply('S', 'b', rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 })
          .catch((e: unknown) => e)) as Error
      ).message,
    ).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);

    await redis.del('t:{S}:b:1000:S#product#P');
    await store.seal('S', { now: 2000, minAgeMs: 0 });
    await redis.set('t:{S}:o:S', 'not a hash');
    before = await dump();
    expect(((await store.foldSealed('S', { now: 3000 }).catch((e: unknown) => e)) as Error).message).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);

    await redis.del('t:{S}:o:S');
    await store.foldSealed('S', { now: 3000 });
    // A visitor row's cache version (the only rows whose ack bumps one).
    await redis.set(`t:{S}:v:${V}`, 'garbage');
    before = await dump();
    const out = await store.readOutbox('S', V);
    expect(((await store.ackOutbox('S', V, outboxFields(out), 4000).catch((e: unknown) => e)) as Error).message).toMatch(
      /TALLY_ERR_NOT_A_COUNT/,
    );
    expect(await dump()).toEqual(before);
  });

  it('refuses a batch that meets a key of the wrong type as a BucketsError (TALLY_ERR_WRONG_TYPE), with nothing written', async () => {
    const batch = rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 1 } });
    await store.apply('S', 'a', batch, { now: 1000, dedupeTtlSeconds: 60 });
    const slow = rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 10n ** 15n } });
    // A bucket hash met by the fast path's HINCRBY and by the full path's HMGET, the row set (its TYPE checked), a
    // ranking zset (its ZMSCORE) and the erased rows.
    const cases: Array<[string, RowDeltas]> = [
      ['t:{S}:b:1000:S#product#P', batch],
      ['t:{S}:b:1000:S#product#P', slow],
      ['t:{S}:r:1000', batch],
      ['t:{S}:k:2026-336:v:product', batch],
      ['t:{S}:xr', batch],
    ];
    for (const [key, b] of cases) {
      const saved = await redis.dumpBuffer(key);
      await redis.del(key);
      await redis.set(key, 'of another type');
      const before = await dump();
      const err = await store.apply('S', 'b', b, { now: 1000, dedupeTtlSeconds: 60 }).catch((e: unknown) => e);
      expect(err, key).toBeInstanceOf(BucketsError);
      expect((err as BucketsError).code).toBe('TALLY_ERR_WRONG_TYPE');
      expect((err as Error).message).toMatch(/^batch b of store S not applied \(nothing written\): .*WRONGTYPE/);
      expect(await dump()).toEqual(before);
      await redis.del(key);
      if (saved) await redis.restore(key, 0, saved);
    }
    expect((await store.apply('S', 'b', batch, { now: 1000, dedupeTtlSeconds: 60 })).applied).toBe(true);
  });

  it('refuses a ranking zset of the wrong type, or a malformed ranking argument, before writing', async () => {
    const batch = rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 1 }, 'S#product#Q': { '2026-337|v': 1 } });
    await store.apply('S', 'a', batch, { now: 1000, dedupeTtlSeconds: 60 });
    await redis.set('t:{S}:k:2026-337:v:product', 'not a zset');
    const before = await dump();
    const message = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as Error).message;
    expect(await message(store.apply('S', 'b', batch, { now: 1000, dedupeTtlSeconds: 60 }))).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);
    // The script called with its rankings' arguments malformed: a count or delta out of range, arguments left over,
    // and once the store has erased rows (when the rows' indexes are read) an index out of range.
    const keys = { epoch: 't:{S}:epoch', dedupe: 't:{S}:d:c', rows: 't:{S}:r:1000', tombstone: 't:{S}:x', erased: 't:{S}:xr' };
    const args = { now: 1000, dedupeTtlSeconds: 60, epoch: 1000, rowCount: 1, rankTtlSeconds: 60 };
    const tailKeys = ['t:{S}:b:1000:S#product#P', 't:{S}:k:2026-336:v:product'];
    const bad = [['x'], [-1], [1, '1', 'P', 'NaN'], [1, '1', 'P', -1], [1, '1', 'P', 'inf'], [2, '1', 'P', 1], [1, '1', 'P', 1, 'extra']];
    for (const erased of [false, true]) {
      if (erased) await redis.hset('t:{S}:xr', 'S#visitor#V', '5000');
      const before = await dump();
      const badRows = [
        [1, '2', 'P', 1],
        [1, '0', 'P', 1],
        [1, 'x', 'P', 1],
        [1, '1,1', 'P', 1],
        [1, '', 'P', 1],
      ];
      for (const ranking of erased ? [...bad, ...badRows] : bad) {
        const run = runScript(redis, APPLY, keys, args, { keys: tailKeys, args: ['S#product#P', 1, '2026-336|v', 1, ...ranking] });
        expect(await message(run)).toMatch(/TALLY_ERR_ARGUMENT/);
      }
      expect(await dump()).toEqual(before);
    }
  });

  it('keeps the outbox-entry count, the visit and the work-set publish to the rule (check, then write)', async () => {
    const message = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as Error).message;
    await store.apply('S', 'a', rows({ S: { '2026-336|v': 1 }, 'S#product#P': { '2026-336|v': 3n * 10n ** 15n + 1n } }), {
      now: 1000,
      dedupeTtlSeconds: 60,
    });
    await store.seal('S', { now: 2000, minAgeMs: 0 });
    // Fold: a running count that is not an integer, or a counts key of another type, is refused before writing.
    for (const corrupt of [() => redis.hset('t:{S}:n', 'entries', 'x'), () => redis.set('t:{S}:n', 'not a hash')]) {
      await redis.del('t:{S}:n');
      await corrupt();
      const before = await dump();
      expect(await message(store.foldSealed('S', { now: 3000 }))).toMatch(/TALLY_ERR_NOT_A_COUNT|WRONGTYPE/);
      expect(await dump()).toEqual(before);
    }
    await redis.del('t:{S}:n');
    await store.foldSealed('S', { now: 3000 });
    // One entry per count, not per limb: S's v and P's v (whose v|1 is a limb of it).
    expect(await redis.hget('t:{S}:n', 'entries')).toBe('2');

    // Ack: the same check before its first write.
    const s = await store.readOutbox('S', 'S');
    await redis.hset('t:{S}:n', 'entries', '1.5');
    let before = await dump();
    expect(await message(store.ackOutbox('S', 'S', outboxFields(s), 4000))).toMatch(/TALLY_ERR_NOT_A_COUNT/);
    expect(await dump()).toEqual(before);
    await redis.hset('t:{S}:n', 'entries', '3');
    await store.ackOutbox('S', 'S', outboxFields(s), 4000);
    expect(await redis.hget('t:{S}:n', 'entries')).toBe('2');
    const p = await store.readOutbox('S', 'S#product#P');
    await store.ackOutbox('S', 'S#product#P', outboxFields(p), 4000);
    expect(await redis.hget('t:{S}:n', 'entries')).toBeNull();

    // Visit: a key it reports on of the wrong type refuses the visit before it seals (the epoch stays).
    await store.apply('S', 'b', rows({ S: { '2026-336|v': 1 } }), { now: 2500, dedupeTtlSeconds: 60 });
    await redis.set('t:{S}:due', 'not a zset');
    before = await dump();
    expect(await message(store.visit('S', { now: 5000, minAgeMs: 0 }))).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);
    await redis.del('t:{S}:due');
    expect((await store.visit('S', { now: 5000, minAgeMs: 0 })).sealed).toBe(2000);

    // Publish: a bad backlog of a later store refuses the whole call, the earlier store's publish included.
    await store.registerStore('S');
    await store.registerStore('T');
    before = await dump();
    const backlog = (rows: number, entries: number, oldestDirty: number) => ({ rows, entries, oldestDirty, oldestUnfolded: undefined });
    expect(
      await message(
        store.publishBacklogs(0, [
          { store: 'S', backlog: backlog(1, 2, 5) },
          { store: 'T', backlog: backlog(1, 1, Number.NaN) },
        ]),
      ),
    ).toMatch(/TALLY_ERR_ARGUMENT/);
    expect(await dump()).toEqual(before);
    await redis.hset('t:{t:w0}:totals', 'rows', 'x');
    before = await dump();
    expect(await message(store.publishBacklogs(0, [{ store: 'S', backlog: backlog(1, 2, 5) }]))).toMatch(/TALLY_ERR_NOT_A_COUNT/);
    expect(await dump()).toEqual(before);
    await redis.del('t:{t:w0}:totals');
    expect(
      await store.publishBacklogs(0, [
        { store: 'S', backlog: backlog(1, 2, 5) },
        { store: 'T', backlog: backlog(1, 1, 7) },
        { store: 'S', backlog: backlog(2, 4, 5) },
      ]),
    ).toEqual(['published', 'published', 'published']);
    expect(await redis.hgetall('t:{t:w0}:totals')).toEqual({ rows: '3', entries: '5' });
    // A mark other than the store's (an apply since it was read) keeps the store; its own mark retires it.
    const mark = (await store.activeStores(0)).find((a) => a.store === 'T')!.mark;
    expect(await store.publishBacklogs(0, [{ store: 'T', backlog: backlog(0, 0, 7), mark: String(Number(mark) - 1) }])).toEqual([
      'published',
    ]);
    expect(
      await store.publishBacklogs(0, [
        { store: 'T', backlog: { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined }, mark },
        { store: 'T', backlog: backlog(1, 1, 7) },
      ]),
    ).toEqual(['retired', 'absent']);
    expect(await redis.hgetall('t:{t:w0}:totals')).toEqual({ rows: '2', entries: '4' });

    // Register and the due-store read (which fills in missing visit times): a wrong-typed key refuses the call whole.
    await redis.set('t:{t:w0}:next', 'not a zset');
    before = await dump();
    expect(await message(store.registerStore('U', 5))).toMatch(/WRONGTYPE/);
    expect(await message(store.dueStores(0, 10))).toMatch(/WRONGTYPE/);
    expect(await dump()).toEqual(before);
    await redis.del('t:{t:w0}:next');
    expect((await store.dueStores(0, 10)).map((a) => a.store)).toEqual(['S']);
    expect(await message(store.registerStore('U', Number.NaN))).toMatch(/TALLY_ERR_ARGUMENT/);
  });

  it('ranks limbs by their whole value', async () => {
    await store.apply(
      'S',
      'a',
      rows({ 'S#product#P1': { '2026-336|r': 3n * 10n ** 15n + 1n }, 'S#product#P2': { '2026-336|r': 10n ** 15n - 1n } }),
      { now: 1, dedupeTtlSeconds: 60 },
    );
    await store.seal('S', { now: 2, minAgeMs: 0 });
    await store.foldSealed('S', { now: 3 });
    expect(await store.top('S', 'product', 'r', ['2026-336'], 10)).toEqual([
      { member: 'P1', score: 3e15 + 1 },
      { member: 'P2', score: 1e15 - 1 },
    ]);
    expect(await redis.keys('t:{S}:k:*|*')).toEqual([]);
  });
});

describe('property: extreme values through apply, seal and fold', () => {
  const pks = ['S', 'S#product#P1', 'S#product#P2', 'S#visitor#V'];
  const fields = ['2026-336|r', '2026-336|v', '2026-337|r', '2026-001|pv#P1'];
  const delta = fc.oneof(
    fc.constant(0n),
    fc.constant(1n),
    fc.constant(MAX_UNITS),
    fc.bigInt({ min: 1n, max: 10_000n }).map((n) => n * MAX_UNITS), // a batch of up to 10,000 maximum values
    fc.bigInt({ min: 0n, max: 2n ** 64n }),
    fc.bigInt({ min: D38 / 1000n, max: D38 / 10n }), // near the 38-digit limit: a few of these must be refused
  );
  const step = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('apply' as const),
        rows: fc.array(fc.tuple(fc.constantFrom(...pks), fc.constantFrom(...fields), delta), { minLength: 1, maxLength: 6 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('seal' as const) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('fold' as const) }) },
  );

  it('Redis holds exactly the independently computed sums; a refused batch leaves no trace', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), async (steps) => {
        await redis.flushall();
        // The model: per bucket seq (open or sealed, not yet folded), and per row outbox, exact sums.
        const model = new Map<string, bigint>(); // `${pk}\u0000${field}` -> sum over every bucket
        let now = 1000;
        let batch = 0;
        for (const s of steps) {
          now += 1;
          if (s.kind === 'seal') await store.seal('S', { now, minAgeMs: 0 });
          else if (s.kind === 'fold') await store.foldSealed('S', { now });
          else {
            const d: RowDeltas = new Map();
            for (const [pk, field, v] of s.rows) {
              let row = d.get(pk);
              if (!row) d.set(pk, (row = new Map()));
              row.set(field, BigInt(row.get(field) ?? 0n) + v);
            }
            // A bucket count may not pass 38 digits: find the bucket's current sums to know whether it must refuse.
            const seq = (await redis.get('t:{S}:epoch')) ?? String(now);
            let overflow = false;
            for (const [pk, row] of d) {
              const [snap] = await store.snapshot('S', [pk]);
              for (const [field, v] of row) {
                const inBucket = snap!.entries
                  .filter((e) => String(e.seq) === seq && `${e.dayKey}|${e.metric}` === field)
                  .reduce((a, e) => a + e.value, 0n);
                if (inBucket + BigInt(v) >= D38) overflow = true;
              }
            }
            const before = overflow ? await dump() : undefined;
            const id = `b${batch++}`;
            const r = await store.apply('S', id, d, { now, dedupeTtlSeconds: 600 }).catch((e: unknown) => e);
            if (overflow) {
              expect((r as BucketsError).code).toBe('TALLY_ERR_SUM_OVERFLOW');
              expect(await dump()).toEqual(before);
            } else {
              expect(r).toMatchObject({ applied: true });
              for (const [pk, row] of d)
                for (const [field, v] of row) model.set(`${pk}\u0000${field}`, (model.get(`${pk}\u0000${field}`) ?? 0n) + BigInt(v));
            }
          }
        }
        // Everything in Redis (open, sealed, outbox), summed per row and field, is exactly the model; then again
        // after sealing and folding everything.
        for (const phase of ['as is', 'folded']) {
          if (phase === 'folded') {
            await store.seal('S', { now: now + 10, minAgeMs: 0 });
            await store.foldSealed('S', { now: now + 11 });
          }
          const got = new Map<string, bigint>();
          for (const snap of await store.snapshot('S', pks)) {
            for (const e of snap.entries) {
              const k = `${snap.pk}\u0000${e.dayKey}|${e.metric}`;
              got.set(k, (got.get(k) ?? 0n) + e.value);
            }
          }
          for (const [k, v] of [...got]) if (v === 0n && !model.has(k)) got.delete(k);
          for (const [k, v] of [...model]) if (v === 0n && !got.has(k)) model.delete(k);
          expect(got).toEqual(model);
        }
      }),
      { numRuns: 40, seed: 15 },
    );
  });
});
