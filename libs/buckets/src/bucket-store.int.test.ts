import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import { storeShard } from '@tally/key-layout';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BucketStore, TOP_MAX_MEMBERS, TopTooLargeError, type Entry } from './index';
import { outboxFields } from './test-fixtures';
import { testRules, useBucketStore } from './test-store';

let redis: Redis;
let store: BucketStore;

const deltas = (rows: Record<string, Record<string, number>>): RowDeltas =>
  new Map(Object.entries(rows).map(([pk, f]) => [pk, new Map(Object.entries(f))]));
/** Lua script calls the server has run so far (EVAL and EVALSHA). */
const scriptCalls = async () => {
  const info = await redis.info('commandstats');
  return [...info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
};
const sum = (entries: Entry[], metric = 'v') => entries.filter((e) => e.metric === metric).reduce((s, e) => s + e.value, 0n);

useBucketStore((s, r) => {
  store = s;
  redis = r;
});

describe('apply', () => {
  it('applies a batch once; a redelivered batch id is a no-op', async () => {
    const d = deltas({ S: { '2023-123|v': 3 }, 'S#product#P1': { '2023-123|v': 3 } });
    const first = await store.apply('S', 'b1', d, { now: 1000, dedupeTtlSeconds: 60 });
    const again = await store.apply('S', 'b1', d, { now: 1001, dedupeTtlSeconds: 60 });
    expect(first).toEqual({ applied: true, seq: 1000 });
    expect(again.applied).toBe(false);
    const [row] = await store.snapshot('S', ['S']);
    expect(row!.entries).toEqual([{ seq: 1000, dayKey: '2023-123', metric: 'v', value: 3n }]);
    expect(await redis.ttl('t:{S}:d:b1')).toBeGreaterThan(50);
  });

  it('keeps a dedupe record past the dedupe window by a slack: a batch checked just inside the window and applied a little later is still deduped', async () => {
    const d = deltas({ S: { '2023-123|v': 1 } });
    // W = 3600 s: 10% of it (360 s); W = 60 s: the 300 s floor.
    await store.apply('S', 'day', d, { now: 1000, dedupeTtlSeconds: 3600 });
    await store.apply('S', 'min', d, { now: 1000, dedupeTtlSeconds: 60 });
    expect(await redis.ttl('t:{S}:d:day')).toBeGreaterThan(3600 + 360 - 5);
    expect(await redis.ttl('t:{S}:d:day')).toBeLessThanOrEqual(3600 + 360);
    expect(await redis.ttl('t:{S}:d:min')).toBeGreaterThan(60 + 300 - 5);
    expect(await redis.ttl('t:{S}:d:min')).toBeLessThanOrEqual(60 + 300);
  });

  it('adds up every delta of a (row, field) that one batch repeats, on the full path too', async () => {
    const opts = { now: 1000, dedupeTtlSeconds: 60 };
    // The producers never repeat a field, but a job's payload check lets it through: in one row, and in a pk repeated.
    const big = (n: number) => (BigInt(n) * 10n ** 15n).toString(); // 16 digits: the full path
    await store.applyRows(
      'S',
      'a',
      ['S', 2, '2023-123|r', big(1), '2023-123|r', big(2), 'S', 2, '2023-123|r', big(3), '2023-123|v', 4],
      opts,
    );
    expect(sum((await store.snapshot('S', ['S']))[0]!.entries, 'r')).toBe(6n * 10n ** 15n);
    // A fast-path HINCRBY kept, then two that would carry past the low limb (both taken back to the full path).
    await store.applyRows('S', 'b', ['S', 3, '2023-124|v', String(10n ** 15n - 1n), '2023-124|v', 1, '2023-124|v', 5], opts);
    expect(sum((await store.snapshot('S', ['S']))[0]!.entries.filter((e) => e.dayKey === '2023-124'))).toBe(10n ** 15n + 5n);
    // And a redelivery still adds nothing.
    await store.applyRows('S', 'b', ['S', 2, '2023-124|v', 7, '2023-124|v', 7], opts);
    expect(sum((await store.snapshot('S', ['S']))[0]!.entries.filter((e) => e.dayKey === '2023-124'))).toBe(10n ** 15n + 5n);
  });

  it('keeps exact integers beyond 2^53', async () => {
    const big = 2n ** 60n + 7n;
    const d: RowDeltas = new Map([['S', new Map([['2023-123|r', big]])]]);
    await store.apply('S', 'b', d, { now: 5, dedupeTtlSeconds: 60 });
    await store.apply('S', 'c', d, { now: 5, dedupeTtlSeconds: 60 });
    const [row] = await store.snapshot('S', ['S']);
    expect(row!.entries[0]!.value).toBe(2n * big);
  });
});

describe('keys named from the last seen bucket', () => {
  it('a store instance whose seq is stale (another instance sealed) writes nothing, retries and lands in the open bucket', async () => {
    const other = new BucketStore({ redis, rules: testRules, prefix: 't' });
    await store.apply('S', 'a', deltas({ S: { '2023-123|v': 1 } }), { now: 1000, dedupeTtlSeconds: 60 });
    expect(await other.seal('S', { now: 2000, minAgeMs: 0 })).toBe(1000);
    const before = await scriptCalls();
    expect(await store.apply('S', 'b', deltas({ S: { '2023-123|v': 2 } }), { now: 2500, dedupeTtlSeconds: 60 })).toEqual({
      applied: true,
      seq: 2000,
    });
    expect((await scriptCalls()) - before).toBe(2); // the stale call, then the retry
    expect(await redis.hgetall('t:{S}:b:1000:S')).toEqual({ '2023-123|v': '1' }); // the sealed bucket is untouched
    const [row] = await store.snapshot('S', ['S']);
    expect(row!.entries.map((e) => [e.seq, e.value])).toEqual([
      [1000, 1n],
      [2000, 2n],
    ]);
    // A store emptied under a remembered seq: the new epoch is the apply's now, never the remembered seq.
    await redis.flushall();
    expect(await store.apply('S', 'c', deltas({ S: { '2023-123|v': 4 } }), { now: 3000, dedupeTtlSeconds: 60 })).toEqual({
      applied: true,
      seq: 3000,
    });
    expect(await redis.get('t:{S}:epoch')).toBe('3000');
  });

  it('instances that follow the sealers’ epochs apply alternately across seals with no stale retry', async () => {
    // Two aggregator replicas applying, a third one sealing (its sealer ticks announce the seqs they set).
    const subscribers = [redis.duplicate(), redis.duplicate()];
    const [a, b] = subscribers.map(() => new BucketStore({ redis, rules: testRules, prefix: 't' }));
    const sealer = new BucketStore({ redis, rules: testRules, prefix: 't' });
    try {
      await a!.followEpochs(subscribers[0]!);
      await b!.followEpochs(subscribers[1]!);
      const apply = (s: BucketStore, id: string, now: number) =>
        s.apply('S', id, deltas({ S: { '2023-123|v': 1 } }), { now, dedupeTtlSeconds: 60 });
      await apply(a!, 'first', 1000); // creates the store
      await sealer.registerStore('S');
      let retries = 0;
      for (let bucket = 1; bucket <= 5; bucket++) {
        // A sealer tick: VISIT seals, then the publish announces the new seq.
        const [v] = await sealer.visitMany(['S'], { now: (bucket + 1) * 1000, minAgeMs: 0 });
        expect(v!.sealed).toBe(bucket * 1000);
        await sealer.publishBacklogs(0, [{ store: 'S', backlog: v!.backlog, epoch: v!.epoch }]);
        await Promise.all(subscribers.map((s) => s.ping())); // the announcement is in (it was sent before)
        for (const [s, id] of [
          [a!, 'x'],
          [b!, 'y'],
        ] as const) {
          const before = await scriptCalls();
          expect(await apply(s, `${id}${bucket}`, (bucket + 1) * 1000 + 500)).toEqual({ applied: true, seq: (bucket + 1) * 1000 });
          retries += (await scriptCalls()) - before - 1;
        }
      }
      expect(retries).toBe(0);
      // Without the announcement (an instance that does not follow them), each seal costs it one retry.
      const alone = new BucketStore({ redis, rules: testRules, prefix: 't' });
      await apply(alone, 'z1', 6600);
      await sealer.visitMany(['S'], { now: 7000, minAgeMs: 0 });
      const before = await scriptCalls();
      await apply(alone, 'z2', 7100);
      expect((await scriptCalls()) - before).toBe(2);
    } finally {
      for (const s of subscribers) s.disconnect();
    }
  });
});

describe('the outbox-entry gauge', () => {
  it('counts entries, not their limbs, and never goes below 0', async () => {
    await store.registerStore('S');
    // '2023-123|r' needs two limbs (f and f|1): one entry.
    await store.apply(
      'S',
      'a',
      new Map([
        [
          'S',
          new Map([
            ['2023-123|r', 3n * 10n ** 15n + 1n],
            ['2023-123|v', 1n],
          ]),
        ],
        ['S#product#P', new Map([['2023-123|v', 1n]])],
      ]),
      { now: 1, dedupeTtlSeconds: 60 },
    );
    await store.seal('S', { now: 2, minAgeMs: 0 });
    await store.foldSealed('S', { now: 3 });
    expect(await redis.hlen('t:{S}:o:S')).toBe(3); // two counts, one of them with a high limb
    expect((await store.storeBacklog('S')).entries).toBe(3); // S: 2, S#product#P: 1
    // An undercount, as an older version left for outboxes written before it kept the count: acking S deletes 2.
    await redis.hset('t:{S}:n', 'entries', '1');
    const out = await store.readOutbox('S', 'S');
    expect(await store.ackOutbox('S', 'S', outboxFields(out), 4)).toBe(0);
    expect(await redis.hget('t:{S}:n', 'entries')).toBe('0');
    expect((await store.storeBacklog('S')).entries).toBe(0);
    // Shard totals an older version left below 0 come back to 0 at the next publish; the gauges never read < 0.
    await redis.hset(`${store.keys.work(0)}totals`, 'rows', '-4', 'entries', '-9');
    expect(await store.backlog()).toMatchObject({ rows: 0, entries: 0 });
    expect(await store.publishBacklog('S', await store.storeBacklog('S'))).toBe('published');
    expect(await redis.hgetall(`${store.keys.work(0)}totals`)).toEqual({ rows: '0', entries: '0' });
  });
});

describe('seal and fold', () => {
  it('seals, folds in order into outboxes, advances foldedThrough only when complete', async () => {
    await store.apply('S', 'a', deltas({ S: { '2023-123|v': 1 }, 'S#product#P1': { '2023-123|v': 1 } }), {
      now: 1000,
      dedupeTtlSeconds: 60,
    });
    expect(await store.seal('S', { now: 1500, minAgeMs: 1000 })).toBeUndefined(); // too young
    expect(await store.seal('S', { now: 2000, minAgeMs: 1000 })).toBe(1000);
    await store.apply('S', 'b', deltas({ S: { '2023-123|v': 2, '2023-122|v': 5 } }), { now: 2100, dedupeTtlSeconds: 60 });
    expect(await store.seal('S', { now: 3000, minAgeMs: 1000 })).toBe(2000);
    expect(await store.seal('S', { now: 4000, minAgeMs: 1000 })).toBeUndefined(); // open bucket empty
    expect(await redis.lrange('t:{S}:sealed', 0, -1)).toEqual(['1000', '2000']);

    const before = await store.snapshot('S', ['S', 'S#product#P1']);
    expect(await store.foldSealed('S', { now: 4000, rowsPerCall: 1 })).toEqual({ buckets: 2, rows: 3 });
    const after = await store.snapshot('S', ['S', 'S#product#P1']);
    expect(after.map((r) => sum(r.entries))).toEqual(before.map((r) => sum(r.entries)));
    expect(after.map((r) => sum(r.entries))).toEqual([8n, 1n]);

    const out = await store.readOutbox('S', 'S');
    expect(out.foldedThrough).toBe(2000);
    expect(out.entries.map((e) => e.field).sort()).toEqual(['1000|2023-123|v', '2000|2023-122|v', '2000|2023-123|v']);
    expect(await redis.lrange('t:{S}:sealed', 0, -1)).toEqual([]);
    expect(await redis.keys('t:{S}:b:*')).toEqual([]);
    expect(await redis.keys('t:{S}:r:*')).toEqual([]);
    // Folding again changes nothing.
    expect(await store.foldSealed('S', { now: 5000 })).toEqual({ buckets: 0, rows: 0 });
    expect((await store.readOutbox('S', 'S')).entries).toHaveLength(3);
  });

  it('never changes a sealed bucket, whatever the concurrent applies', async () => {
    await store.apply('S', 'first', deltas({ S: { '2023-123|v': 1 } }), { now: 1, dedupeTtlSeconds: 60 });
    const writers = Array.from({ length: 400 }, (_, i) =>
      store.apply('S', `b${i}`, deltas({ S: { '2023-123|v': 1 } }), { now: 10 + i, dedupeTtlSeconds: 60 }),
    );
    const seals: Promise<number | undefined>[] = [];
    for (let i = 0; i < 20; i++) seals.push(store.seal('S', { now: 1000 + i * 10, minAgeMs: 0 }));
    const applied = await Promise.all(writers);
    const sealedSeqs = (await Promise.all(seals)).filter((s): s is number => s !== undefined);
    // Every apply reported the bucket it landed in; each sealed bucket holds exactly the applies reported for it.
    const snapshotBefore = new Map<number, bigint>();
    for (const seq of sealedSeqs) snapshotBefore.set(seq, BigInt((await redis.hget(`t:{S}:b:${seq}:S`, '2023-123|v')) ?? '0'));
    for (const seq of sealedSeqs) {
      const reported = applied.filter((a) => a.seq === seq).length + (seq === 1 ? 1 : 0);
      expect(snapshotBefore.get(seq)).toBe(BigInt(reported));
    }
    // More applies after the seals go to the open bucket only.
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        store.apply('S', `late${i}`, deltas({ S: { '2023-123|v': 1 } }), { now: 5000, dedupeTtlSeconds: 60 }),
      ),
    );
    for (const seq of sealedSeqs) expect(BigInt((await redis.hget(`t:{S}:b:${seq}:S`, '2023-123|v')) ?? '0')).toBe(snapshotBefore.get(seq));
    const [row] = await store.snapshot('S', ['S']);
    expect(sum(row!.entries)).toBe(451n);
  });

  it('two folders at once fold every bucket exactly once', async () => {
    for (let b = 0; b < 5; b++) {
      const rows: Record<string, Record<string, number>> = {};
      for (let p = 0; p < 300; p++) rows[`S#product#P${p}`] = { '2023-123|v': b + 1 };
      await store.apply('S', `b${b}`, deltas(rows), { now: b * 1000, dedupeTtlSeconds: 60 });
      await store.seal('S', { now: b * 1000 + 999, minAgeMs: 0 });
    }
    const [x, y] = await Promise.all([
      store.foldSealed('S', { now: 9000, rowsPerCall: 7 }),
      store.foldSealed('S', { now: 9000, rowsPerCall: 11 }),
    ]);
    expect(x.buckets + y.buckets).toBe(5);
    expect(x.rows + y.rows).toBe(1500);
    for (let p = 0; p < 300; p += 37) {
      const out = await store.readOutbox('S', `S#product#P${p}`);
      expect(out.entries.reduce((s, e) => s + e.value, 0n)).toBe(15n);
    }
    // Bucket seqs are the open times: 0, 999, 1999, 2999, 3999.
    expect(await redis.get('t:{S}:folded')).toBe('3999');
  });
});

describe('rankings', () => {
  it('ranks ranked entities by day from every bucket: folded, sealed and open', async () => {
    await store.apply(
      'S',
      'a',
      deltas({
        'S#product#P1': { '2023-123|v': 5, '2023-123|o': 1 },
        'S#product#P2': { '2023-123|v': 7, '2023-124|v': 1 },
        'S#visitor#V': { '2023-123|v': 99 },
      }),
      { now: 1, dedupeTtlSeconds: 60 },
    );
    // Only in the open bucket: ranked at once; the visitor row (not ranked) never is.
    expect(await store.top('S', 'product', 'v', ['2023-123'], 10)).toEqual([
      { member: 'P2', score: 7 },
      { member: 'P1', score: 5 },
    ]);
    await store.seal('S', { now: 2, minAgeMs: 0 });
    expect(await store.top('S', 'product', 'v', ['2023-123', '2023-124'], 10)).toEqual([
      { member: 'P2', score: 8 },
      { member: 'P1', score: 5 },
    ]); // sealed, not folded
    await store.foldSealed('S', { now: 3 });
    await store.apply('S', 'b', deltas({ 'S#product#P1': { '2023-124|v': 4 } }), { now: 4, dedupeTtlSeconds: 60 });
    // Folded rankings plus the open bucket.
    const expected = [
      { member: 'P1', score: 9 },
      { member: 'P2', score: 8 },
    ];
    expect(await store.top('S', 'product', 'v', ['2023-123', '2023-124'], 10)).toEqual(expected);
    await store.seal('S', { now: 5, minAgeMs: 0 });
    await store.foldSealed('S', { now: 6 });
    expect(await store.top('S', 'product', 'v', ['2023-123', '2023-124'], 10)).toEqual(expected);
    expect(await store.top('S', 'product', 'v', ['2023-124'], 1)).toEqual([{ member: 'P1', score: 4 }]);
    expect(await store.top('S', 'product', 'o', ['2023-123'], 10)).toEqual([{ member: 'P1', score: 1 }]);
    expect(await redis.keys('t:{S}:tmp:*')).toEqual([]);
  });

  it('sums a member of flat rows that repeat its pk', async () => {
    const rows = [
      'S#product#P1',
      1,
      '2023-123|v',
      2,
      'S#product#P2',
      1,
      '2023-123|v',
      3,
      'S#product#P1',
      2,
      '2023-123|v',
      4,
      '2023-123|o',
      1,
    ];
    await store.applyRows('S', 'a', rows, { now: 1, dedupeTtlSeconds: 60 });
    expect(await store.top('S', 'product', 'v', ['2023-123'], 10)).toEqual([
      { member: 'P1', score: 6 },
      { member: 'P2', score: 3 },
    ]);
    expect(await store.top('S', 'product', 'o', ['2023-123'], 10)).toEqual([{ member: 'P1', score: 1 }]);
  });

  it('ranks a batch once: a redelivered batch adds nothing, and a refused one leaves the rankings as they were', async () => {
    const batch = deltas({ 'S#product#P1': { '2023-123|v': 2 }, 'S#product#P2': { '2023-123|v': 1, '2023-123|pv#X': 5 } });
    await store.apply('S', 'a', batch, { now: 1, dedupeTtlSeconds: 60 });
    expect((await store.apply('S', 'a', batch, { now: 2, dedupeTtlSeconds: 60 })).applied).toBe(false);
    const once = [
      { member: 'P1', score: 2 },
      { member: 'P2', score: 1 },
    ];
    expect(await store.top('S', 'product', 'v', ['2023-123'], 10)).toEqual(once);
    // Keyed fields (`pv#X`) are not ranked.
    expect(await redis.keys('t:{S}:k:*pv*')).toEqual([]);
    expect(await redis.ttl('t:{S}:k:2023-123:v:product')).toBeGreaterThan(0);
    // A batch refused whole (a count past 38 digits) ranks nothing either.
    const big = (n: bigint): RowDeltas => new Map([['S#visitor#V', new Map([['2023-123|v', n]])]]);
    await store.apply('S', 'b', big(10n ** 38n - 1n), { now: 3, dedupeTtlSeconds: 60 });
    const refused = new Map([...big(1n), ...deltas({ 'S#product#P1': { '2023-123|v': 100 } })]);
    await expect(store.apply('S', 'c', refused, { now: 4, dedupeTtlSeconds: 60 })).rejects.toThrow(/SUM_OVERFLOW/);
    expect(await store.top('S', 'product', 'v', ['2023-123'], 10)).toEqual(once);
  });

  it('cuts at the limit in id order among equal scores: the lowest ids of a tie, and a smaller limit a prefix', async () => {
    // P01..P25 one view each (spread over two days), Q and R three each: the cut of most limits falls in the ties.
    const pad = (i: number) => `P${String(i).padStart(2, '0')}`;
    const rows: Record<string, Record<string, number>> = { 'S#product#R': { '2023-124|v': 3 }, 'S#product#Q': { '2023-123|v': 3 } };
    for (let i = 1; i <= 25; i++) rows[`S#product#${pad(i)}`] = { [i % 2 === 0 ? '2023-123|v' : '2023-124|v']: 1 };
    await store.apply('S', 'a', deltas(rows), { now: 1, dedupeTtlSeconds: 60 });
    const days = ['2023-123', '2023-124'];
    const all = [
      { member: 'Q', score: 3 },
      { member: 'R', score: 3 },
      ...Array.from({ length: 25 }, (_, i) => ({ member: pad(i + 1), score: 1 })),
    ];
    // ZRANGE … REV alone gives equal scores in reverse id order: R, Q, then P25 … P18 at limit 10.
    expect(await store.top('S', 'product', 'v', days, 10)).toEqual(all.slice(0, 10));
    for (const limit of [1, 2, 3, 5, 20, 26, 27, 28, 100])
      expect(await store.top('S', 'product', 'v', days, limit)).toEqual(all.slice(0, limit));
    expect(await redis.keys('t:{S}:tmp:*')).toEqual([]);
  });

  it('past 2^53, where scores are inexact, returns every member scored within 2^-14 below the cut, ties whole', async () => {
    const big = 2n ** 60n + 1n; // one double for all three (2^60)
    const rows: RowDeltas = new Map(['C', 'A', 'B'].map((id) => [`S#product#${id}`, new Map([['2023-123|v', big]])]));
    rows.set('S#product#D', new Map([['2023-123|v', 2n ** 61n]]));
    // E within the margin below a cut at 2^60 (2^60 · 2^-14 = 2^46), F past it.
    rows.set('S#product#E', new Map([['2023-123|v', 2n ** 60n - 2n ** 45n]]));
    rows.set('S#product#F', new Map([['2023-123|v', 2n ** 60n - 2n ** 47n]]));
    await store.apply('S', 'a', rows, { now: 1, dedupeTtlSeconds: 60 });
    expect(await store.top('S', 'product', 'v', ['2023-123'], 3)).toEqual([
      { member: 'D', score: 2 ** 61 },
      { member: 'A', score: 2 ** 60 },
      { member: 'B', score: 2 ** 60 },
      { member: 'C', score: 2 ** 60 },
      { member: 'E', score: 2 ** 60 - 2 ** 45 },
    ]);
    expect(await store.top('S', 'product', 'v', ['2023-123'], 1)).toEqual([{ member: 'D', score: 2 ** 61 }]);
  });
});

describe('the bound on the members one top list unions', () => {
  /** Every key of the database with its type, TTL and content, to compare before and after a refused TOP. */
  const dump = async () => {
    const out: Record<string, unknown> = {};
    for (const key of (await redis.keys('*')).sort()) {
      const type = await redis.type(key);
      const ttl = await redis.pttl(key);
      if (type === 'zset') out[key] = { ttl: ttl > 0, members: await redis.zrange(key, 0, -1, 'WITHSCORES') };
      else if (type === 'hash') out[key] = { ttl: ttl > 0, fields: await redis.hgetall(key) };
      else out[key] = { type, ttl: ttl > 0 };
    }
    return out;
  };
  /** ZUNIONSTORE calls the server has run so far, from scripts too. */
  const unions = async () => Number(/^cmdstat_zunionstore:calls=(\d+)/m.exec(await redis.info('commandstats'))?.[1] ?? 0);

  it('refuses days whose rankings hold more members in all than the bound, before any union and writing nothing', async () => {
    // Day 123: P1..P4; day 124: P1, P5, P6. Summed ZCARDs: 7 (P1 counts on both days), the union 6.
    await store.apply(
      'S',
      'a',
      deltas({
        'S#product#P1': { '2023-123|v': 5, '2023-124|v': 1 },
        'S#product#P2': { '2023-123|v': 4 },
        'S#product#P3': { '2023-123|v': 3 },
        'S#product#P4': { '2023-123|v': 2 },
        'S#product#P5': { '2023-124|v': 7 },
        'S#product#P6': { '2023-124|v': 1 },
      }),
      { now: 1, dedupeTtlSeconds: 60 },
    );
    const days = ['2023-123', '2023-124'];
    const all = [
      { member: 'P5', score: 7 },
      { member: 'P1', score: 6 },
      { member: 'P2', score: 4 },
      { member: 'P3', score: 3 },
      { member: 'P4', score: 2 },
      { member: 'P6', score: 1 },
    ];
    // At the bound: ranked as before.
    expect(await store.top('S', 'product', 'v', days, 10, 7)).toEqual(all);
    expect(await store.top('S', 'product', 'v', days, 2, 7)).toEqual(all.slice(0, 2));
    const before = await dump();
    const calls = await unions();
    // One past it: refused, whatever the limit; the union is never run and nothing is written (no scratch key).
    for (const limit of [1, 10]) {
      const err = await store.top('S', 'product', 'v', days, limit, 6).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TopTooLargeError);
      expect(err).toMatchObject({ code: 'TALLY_ERR_TOP_TOO_LARGE', store: 'S', members: 7, maxMembers: 6 });
    }
    expect(await unions()).toBe(calls);
    expect(await dump()).toEqual(before);
    expect(await redis.keys('t:{S}:tmp:*')).toEqual([]);
    // A shorter range under the bound is ranked.
    expect(await store.top('S', 'product', 'v', ['2023-124'], 10, 6)).toEqual([
      { member: 'P5', score: 7 },
      { member: 'P1', score: 1 },
      { member: 'P6', score: 1 },
    ]);
    expect(await unions()).toBe(calls + 1);
  });

  it('bounds a call without one at TOP_MAX_MEMBERS', async () => {
    // A ranking of TOP_MAX_MEMBERS ids on one day and one more on the next (ZADD, as a tenant sending random ids would).
    for (let from = 0; from < TOP_MAX_MEMBERS; from += 10_000) {
      const ids = Array.from({ length: Math.min(10_000, TOP_MAX_MEMBERS - from) }, (_, i) => [1, `R${from + i}`]).flat();
      await redis.zadd('t:{S}:k:2023-123:v:product', ...ids);
    }
    expect(await store.top('S', 'product', 'v', ['2023-123'], 1)).toEqual([{ member: 'R0', score: 1 }]);
    await redis.zadd('t:{S}:k:2023-124:v:product', 1, 'X');
    await expect(store.top('S', 'product', 'v', ['2023-123', '2023-124'], 1)).rejects.toMatchObject({
      members: TOP_MAX_MEMBERS + 1,
      maxMembers: TOP_MAX_MEMBERS,
    });
    expect(await redis.keys('t:{S}:tmp:*')).toEqual([]);
  });
});

describe('flush scheduling and ack', () => {
  it('computes due times by policy', async () => {
    const H = 3_600_000;
    await store.apply(
      'S',
      'a',
      deltas({ S: { '2023-123|v': 1 }, 'S#product#P': { '2023-123|v': 1 }, 'S#visitor#V': { '2023-123|v': 1 } }),
      { now: 10 * H, dedupeTtlSeconds: 60 },
    );
    await store.seal('S', { now: 10 * H + 5, minAgeMs: 0 });
    await store.foldSealed('S', { now: 10 * H + 10 });
    const due = Object.fromEntries(
      (await redis.zrange('t:{S}:due', 0, -1, 'WITHSCORES')).reduce<string[][]>(
        (a, v, i, arr) => (i % 2 ? a : [...a, [v, arr[i + 1]!]]),
        [],
      ),
    );
    expect(Number(due['S'])).toBe(10 * H + 10); // bucket: now
    expect(Number(due['S#product#P'])).toBe(11 * H); // every 60 min, aligned
    expect(Number(due['S#visitor#V'])).toBe(10 * H + 10 + 30 * 60_000); // idle 30 min
    expect((await store.dueRows('S', 10 * H + 10)).map((r) => r.pk)).toEqual(['S']);
    expect((await store.dueRows('S', 11 * H)).map((r) => r.pk).sort()).toEqual(['S', 'S#product#P', 'S#visitor#V']);

    // Visitor touched again 20 minutes later: idle due moves, capped by max age.
    await store.apply('S', 'b', deltas({ 'S#visitor#V': { '2023-123|v': 1 } }), { now: 10 * H + 20 * 60_000, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 10 * H + 20 * 60_000, minAgeMs: 0 });
    await store.foldSealed('S', { now: 10 * H + 20 * 60_000 });
    expect(await store.flushTime('S', 'S#visitor#V')).toBe(10 * H + 50 * 60_000);
    // Kept beside its alarm (the zset is not rewritten on a re-touch): not due when the alarm fires, due at its time.
    expect(await redis.zscore('t:{S}:due', 'S#visitor#V')).toBe(String(10 * H + 10 + 30 * 60_000));
    expect((await store.dueRows('S', 10 * H + 50 * 60_000 - 1)).map((r) => r.pk)).not.toContain('S#visitor#V');
    expect((await store.dueRows('S', 10 * H + 50 * 60_000)).map((r) => r.pk)).toContain('S#visitor#V');
    expect((await store.storeBacklog('S')).oldestDirty).toBe(10 * H + 10);
  });

  it('spreads an every policy with spread over its interval by store: each store at one whole-minute phase of its own', async () => {
    const H = 3_600_000;
    const product = { ...defaultRules.entities['product']!, flush: { kind: 'every' as const, minutes: 60, spread: true } };
    const spread = new BucketStore({
      redis,
      prefix: 't',
      rules: compileRules({ ...defaultRules, entities: { ...defaultRules.entities, product } }),
    });
    const stores = Array.from({ length: 30 }, (_, i) => `S${i}`);
    const pkOf = (s: string) => `${s}#product#P`;
    const touch = async (s: string, batch: string, now: number) => {
      await spread.apply(s, batch, deltas({ [pkOf(s)]: { '2023-123|v': 1 } }), { now, dedupeTtlSeconds: 60 });
      await spread.seal(s, { now: now + 5, minAgeMs: 0 });
      await spread.foldSealed(s, { now: now + 10 });
    };
    for (const s of stores) await touch(s, 'a', 10 * H);
    const dues = await Promise.all(stores.map((s) => spread.flushTime(s, pkOf(s))));
    for (const due of dues) {
      expect(due! % 60_000).toBe(0);
      expect(due).toBeGreaterThan(10 * H + 10);
      expect(due).toBeLessThanOrEqual(10 * H + 10 + H);
    }
    // Without spread every store's row is due at 11:00 (the test above); with it, 30 stores fall on many minutes.
    expect(new Set(dues).size).toBeGreaterThanOrEqual(15);

    // The same phase in the next interval: after the flush (all acked) a new count is due an interval later, and an
    // ack that leaves entries (folded while the writer wrote) reschedules them at the same phase too.
    const [s0, first] = [stores[0]!, dues[0]!];
    await spread.ackOutbox(s0, pkOf(s0), outboxFields(await spread.readOutbox(s0, pkOf(s0))), first);
    await touch(s0, 'b', first + 60_000);
    expect(await spread.flushTime(s0, pkOf(s0))).toBe(first + H);
    const written = outboxFields(await spread.readOutbox(s0, pkOf(s0)));
    await touch(s0, 'c', first + H - 60_000);
    expect(await spread.ackOutbox(s0, pkOf(s0), written, first + H)).toBeGreaterThan(0);
    expect(await spread.flushTime(s0, pkOf(s0))).toBe(first + 2 * H);
  });

  it("spreads each queue shard's stores over the interval too, not only over the minutes congruent to the shard", async () => {
    // With 60 shards and a 60-minute interval a phase of hash mod 60 would put each shard's stores on one minute:
    // one burst per shard (per Cluster master) again.
    const product = { ...defaultRules.entities['product']!, flush: { kind: 'every' as const, minutes: 60, spread: true } };
    const spread = new BucketStore({
      redis,
      prefix: 't',
      rules: compileRules({ ...defaultRules, entities: { ...defaultRules.entities, product } }),
    });
    const minutesByShard = new Map<number, Set<number>>();
    for (let i = 0; i < 1_200; i++) {
      const s = `STORE${i}`;
      await spread.apply(s, 'a', deltas({ [`${s}#product#P`]: { '2023-123|v': 1 } }), { now: 10, dedupeTtlSeconds: 60 });
      await spread.seal(s, { now: 15, minAgeMs: 0 });
      await spread.foldSealed(s, { now: 20 });
      const minutes = minutesByShard.get(storeShard(s, 60)) ?? new Set();
      minutesByShard.set(storeShard(s, 60), minutes.add((await spread.flushTime(s, `${s}#product#P`))! / 60_000));
    }
    // About 20 stores a shard over 60 minutes: some 17 distinct minutes each.
    expect(Math.min(...[...minutesByShard.values()].map((m) => m.size))).toBeGreaterThanOrEqual(5);
  });

  it('ack deletes applied entries, drops a visitor row’s cache, bumps its version, and forgets clean rows', async () => {
    const V = 'S#visitor#V';
    await store.apply('S', 'a', deltas({ [V]: { '2023-123|v': 1 } }), { now: 1, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 2, minAgeMs: 0 });
    await store.foldSealed('S', { now: 3 });
    const snap = (await store.snapshot('S', [V], true))[0]!;
    expect(snap.cacheVersion).toBe('0');
    expect(await store.fillCache('S', V, '0', '{"items":[]}', 60)).toBe(true);
    const out = await store.readOutbox('S', V);
    // Another apply folds while the writer works: the row stays dirty and is rescheduled.
    await store.apply('S', 'b', deltas({ [V]: { '2023-124|v': 4 } }), { now: 10, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 11, minAgeMs: 0 });
    await store.foldSealed('S', { now: 12 });
    expect(await store.ackOutbox('S', V, outboxFields(out), 20)).toBe(1);
    expect(await redis.get(`t:{S}:c:${V}`)).toBeNull();
    expect(await store.fillCache('S', V, '0', '{"stale":true}', 60)).toBe(false); // the race of the design
    // Dirty since its first fold (3), moved 1 ms so that its next flush job has an id of its own, not since the ack
    // (20): the flush lag is not understated (the entry left was folded at 12).
    expect(await redis.zscore('t:{S}:dirty', V)).toBe('4');
    expect((await store.storeBacklog('S')).oldestDirty).toBe(4);
    const rest = await store.readOutbox('S', V);
    expect(rest.entries.map((e) => [e.field, e.value])).toEqual([['2|2023-124|v', 4n]]);
    expect(await store.ackOutbox('S', V, outboxFields(rest), 30)).toBe(0);
    expect(await redis.zscore('t:{S}:dirty', V)).toBeNull();
    expect(await redis.zscore('t:{S}:due', V)).toBeNull();
    expect(await redis.exists(`t:{S}:o:${V}`)).toBe(0);
  });

  it('ack keeps no cache version for rows whose history no query caches (store, product, page rows)', async () => {
    const pks = ['S', 'S#product#P', 'S#page#home', 'S#visitor#V'];
    await store.apply('S', 'a', deltas(Object.fromEntries(pks.map((pk) => [pk, { '2023-123|v': 1 }]))), { now: 1, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 2, minAgeMs: 0 });
    await store.foldSealed('S', { now: 3 });
    // A version key of a product row left by an earlier release is neither read nor bumped (it expires).
    await redis.set('t:{S}:v:S#product#P', '7');
    for (const pk of pks) expect(await store.ackOutbox('S', pk, outboxFields(await store.readOutbox('S', pk)), 20)).toBe(0);
    expect((await redis.keys('t:{S}:v:*')).sort()).toEqual(['t:{S}:v:S#product#P', 't:{S}:v:S#visitor#V']);
    expect(await redis.get('t:{S}:v:S#product#P')).toBe('7');
    expect(await redis.get('t:{S}:v:S#visitor#V')).toBe('20');
    expect(await redis.zcard('t:{S}:dirty')).toBe(0);
  });

  it('a partial ack moves the dirty time up to the oldest entry left: under a steady backlog a row is not due at every tick', async () => {
    const H = 3_600_000;
    const M = 60_000;
    const pk = 'S#visitor#V'; // idle 30 min, max age 24 h
    let id = 0;
    const touch = async (at: number) => {
      await store.apply('S', `b${id++}`, deltas({ [pk]: { '2023-123|v': 1 } }), { now: at, dedupeTtlSeconds: 60 });
      await store.seal('S', { now: at + 1, minAgeMs: 0 });
      await store.foldSealed('S', { now: at + 2 });
    };
    // Touched every 10 minutes for 25 hours; a flush runs when the row is due, and a bucket folds during each write.
    let flushes = 0;
    let lastAck = 0;
    for (let t = 10 * H; t < 35 * H; t += 10 * M) {
      if ((await store.dueRows('S', t)).some((r) => r.pk === pk)) {
        const out = await store.readOutbox('S', pk);
        await touch(t);
        expect(await store.ackOutbox('S', pk, outboxFields(out), t + 3)).toBe(1);
        flushes++;
        lastAck = t;
        // Dirty since the left entry's bucket opened (its seq), not since the first fold 24 h ago.
        const [left] = (await store.readOutbox('S', pk)).entries;
        expect(await redis.zscore('t:{S}:dirty', pk)).toBe(String(left!.seq));
        expect(left!.seq).toBeGreaterThan(t - 10 * M);
      } else {
        await touch(t);
      }
    }
    // Due once, at its max age: kept at the first fold's time, it was due again at each of the next four visits.
    expect(flushes).toBe(1);
    expect(lastAck).toBe(34 * H + 10 * M);
    expect((await store.storeBacklog('S')).oldestDirty).toBeGreaterThan(34 * H);
  });

  it('a cache version that expired starts again above every value it had', async () => {
    const V = 'S#visitor#V';
    const version = async () => (await store.snapshot('S', [V], true))[0]!.cacheVersion;
    const flush = async (at: number) => {
      await store.apply('S', `b${at}`, deltas({ [V]: { '2023-123|v': 1 } }), { now: at, dedupeTtlSeconds: 60 });
      await store.seal('S', { now: at + 1, minAgeMs: 0 });
      await store.foldSealed('S', { now: at + 2 });
      const out = await store.readOutbox('S', V);
      await store.ackOutbox('S', V, outboxFields(out), at + 3);
    };
    await flush(1_000);
    const first = await version();
    // Two days without an ack: the version key expires (as its TTL would), then the row is written again. A query
    // process still holding a history read at the first version must not take it for current.
    await redis.del(store.keys.cacheVersion('S', V));
    expect(await version()).toBe('0');
    await flush(2_000);
    expect(await version()).not.toBe(first);
    expect(Number(await version())).toBeGreaterThan(Number(first));
  });

  it('readOutbox leaves out buckets not yet completely folded', async () => {
    await store.apply('S', 'a', deltas({ S: { '2023-123|v': 1 } }), { now: 1, dedupeTtlSeconds: 60 });
    await store.seal('S', { now: 2, minAgeMs: 0 });
    // Simulate a fold interrupted after this row: rows set still has another row.
    await redis.sadd('t:{S}:r:1', 'S#product#ghost');
    await store.foldSealed('S', { now: 3 }).catch(() => undefined);
    const out = await store.readOutbox('S', 'S');
    expect(out.foldedThrough).toBe(1);
    expect(out.entries).toHaveLength(1);
  });
});
