import { describe, expect, it } from 'vitest';
import { measureIdempotencyRecords, measureRowMemory, ROW_KINDS } from './row-memory';

// The Redis bytes docs/SCALING.md and tools/cost size open rows and idempotency records with, measured as they print
// (`npx vitest run tools/bench/src/figures/row-memory.int.test.ts`). Bytes are bounded, not pinned: used_memory moves
// by a few bytes a row from run to run; entries and counts are exact (a seeded day on an injected clock).
describe('Redis memory of open rows and idempotency records (docs/SCALING.md "Inputs")', () => {
  it('measures each kind of open row at its fullest on a store-day of docs/SCALING.md, its outbox one entry per bucket and metric', async () => {
    const stores = 4;
    const { kinds, bytesPerOutboxEntry } = await measureRowMemory({ stores, bucketMs: 900_000 });
    const f = (x: number) => Math.round(x).toLocaleString('en-US');
    for (const kind of ROW_KINDS) {
      const k = kinds[kind];
      console.log(
        `${kind} rows: ${k.rows}, ${f(k.total)} B each (outbox ${f(k.outbox)}, sketches ${f(k.sketches)}, zsets ${f(k.bookkeeping)}); ` +
          `${k.entries.toFixed(1)} outbox entries, ${k.counts.toFixed(1)} counts`,
      );
    }
    console.log(`${bytesPerOutboxEntry.toFixed(1)} B per outbox entry`);
    const { product, page, visitor, store } = kinds;
    expect([product.rows, page.rows, store.rows]).toEqual([100 * stores, 100 * stores, stores]);
    expect(visitor.rows).toBeGreaterThanOrEqual(stores);
    // A product row flushed daily keeps an entry per bucket and metric it counted in until then: views in most of the
    // day's 96 buckets, orders and revenue in some; never more entries than counts.
    expect(product.entries).toBeGreaterThan(96);
    for (const kind of ROW_KINDS) expect(kinds[kind].entries).toBeLessThanOrEqual(kinds[kind].counts);
    // The store row (hourly flush) holds its last hour's 4 buckets of its 4 metrics.
    expect(store.entries).toBe(16);
    // Its unique-visitor sketch: an exact set of the day's visitors (8-byte members), and no sketch on a page row.
    expect(product.sketches).toBeGreaterThan(67 * 8);
    expect(Math.abs(page.sketches)).toBeLessThan(50);
    expect(bytesPerOutboxEntry).toBeGreaterThan(10);
    expect(bytesPerOutboxEntry).toBeLessThan(100);
    // Far more than the 231 B per open row the sizing took from visitor rows holding one outbox entry.
    expect(product.total).toBeGreaterThan(20 * 231);
  });

  it('measures an idempotency record: kept two dedupe windows and the slack, a string key each', async () => {
    const { bytesPerRecord, ttlSeconds } = await measureIdempotencyRecords(2_000);
    console.log(`${bytesPerRecord.toFixed(1)} B per idempotency record, TTL ${ttlSeconds} s`);
    // DEDUPE_WINDOW_SECONDS 86,400: 86,400 + 95,040 (libs/intake fingerprintTtlSeconds), read a moment later.
    expect(ttlSeconds).toBeGreaterThan(181_000);
    expect(ttlSeconds).toBeLessThanOrEqual(181_440);
    expect(bytesPerRecord).toBeGreaterThan(64);
    expect(bytesPerRecord).toBeLessThan(400);
  });
});
