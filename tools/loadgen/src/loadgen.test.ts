import { Temporal } from '@js-temporal/polyfill';
import { compileRules, defaultRules, validateEvents, type EventInput } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import {
  BAD_EVENT_KINDS,
  createRng,
  diffCounts,
  expectedCounts,
  generateLoad,
  goodEvents,
  mulberry32,
  priceCents,
  zipf,
  type CounterTable,
} from './index';

const NOW = Date.UTC(2024, 2, 1, 3, 0, 0); // 2024-03-01 03:00Z: still Feb 29 in Los Angeles, a leap day
const STORES = [
  { id: 'KTM', timeZone: 'Asia/Kathmandu' },
  { id: 'LAX', timeZone: 'America/Los_Angeles' },
  { id: 'UTC', timeZone: 'UTC' },
];
const rules = compileRules(defaultRules);
/** The collector's defaults: 5 minutes of clock skew, 35 days of lateness. */
const LIMITS = { now: NOW, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };

describe('seeded randomness', () => {
  it('mulberry32 repeats its stream for a seed and differs across seeds', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(mulberry32(43)()).not.toBe(xs[0]);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });

  it('zipf(n, s) favours low ranks by 1/k^s', () => {
    const draw = zipf(100, 1);
    const rng = createRng(7);
    const counts = new Array(100).fill(0);
    for (let i = 0; i < 200_000; i++) counts[draw(rng)]++;
    // P(rank 0) / P(rank 1) = 2 and P(0) = 1 / H(100) ≈ 0.1928 under Zipf(100, 1).
    expect(counts[0] / counts[1]).toBeGreaterThan(1.9);
    expect(counts[0] / counts[1]).toBeLessThan(2.1);
    expect(counts[0] / 200_000).toBeCloseTo(0.1928, 2);
    expect(Math.min(...counts)).toBeGreaterThan(0);
    expect(() => zipf(0, 1)).toThrow(/positive integer/);
  });
});

describe('generateLoad', () => {
  const take = (n: number, extra = {}) => [...generateLoad({ seed: 3, stores: STORES, now: NOW, maxEvents: n, ...extra })];

  it('is deterministic for a seed', () => {
    expect(take(2_000)).toEqual(take(2_000));
    expect(JSON.stringify(take(500, { seed: 4 }))).not.toBe(JSON.stringify(take(500)));
  });

  it('makes sessions of views, page views and orders with exact 2-decimal values, some late and in the previous month', () => {
    const batches = take(8_000);
    const events = batches.flatMap((b) => b.events.map((e) => ({ store: b.store, e })));
    expect(events.length).toBeGreaterThanOrEqual(8_000);
    const types = new Set(events.map((x) => x.e.type));
    expect([...types].sort()).toEqual(['order', 'order_item', 'page_view', 'view']);
    for (const { e } of events) {
      if (e.value !== undefined) expect(String(e.value)).toMatch(/^\d+(\.\d{1,2})?$/);
      const ts = typeof e.ts === 'number' ? e.ts : Date.parse(e.ts);
      expect(ts).toBeLessThanOrEqual(NOW);
      expect(ts).toBeGreaterThan(NOW - 34 * 86_400_000);
    }
    // Order lines are priced per product; an order's value is the sum of its lines.
    const line = events.find((x) => x.e.type === 'order_item')!.e;
    expect(Math.round(Number(line.value) * 100)).toBe(priceCents(line.dims!['product']!));
    for (const store of STORES) {
      const months = new Set(
        events
          .filter((x) => x.store === store.id)
          .map((x) => Temporal.Instant.fromEpochMilliseconds(Number(new Date(x.e.ts).getTime())).toZonedDateTimeISO(store.timeZone).month),
      );
      expect(months.size).toBeGreaterThanOrEqual(2); // late events reach the previous month
    }
    // Zipf: the most viewed product gets far more views than the median one.
    const views = new Map<string, number>();
    for (const { e } of events) if (e.type === 'view') views.set(e.dims!['product']!, (views.get(e.dims!['product']!) ?? 0) + 1);
    const sorted = [...views.values()].sort((x, y) => y - x);
    expect(sorted[0]! / sorted[Math.floor(sorted.length / 2)]!).toBeGreaterThan(10);
  });

  it('marks the invalid events it mixes in, and only those', () => {
    const batches = take(20_000, { badShare: 0.3 });
    const bad = batches.filter((b) => b.badIndexes.length > 0);
    expect(bad.length).toBeGreaterThan(batches.length * 0.2);
    for (const b of bad) {
      expect(goodEvents(b).length).toBe(b.events.length - b.badIndexes.length);
      expect([...b.badIndexes].sort((x, y) => x - y)).toEqual(b.badIndexes);
    }
    // Every kind occurs, and the intake's validator refuses each invalid event, through a JSON round trip as on
    // the wire (one cent over the maximum, 30 February included).
    expect(new Set(bad.flatMap((b) => b.badKinds))).toEqual(new Set(BAD_EVENT_KINDS));
    for (const b of bad.slice(0, 500)) {
      const r = validateEvents(rules, JSON.parse(JSON.stringify(b.events)), LIMITS);
      expect([...new Set(r.errors.map((e) => e.index))]).toEqual(b.badIndexes);
    }
    const overMax = bad.flatMap((b) =>
      b.badIndexes.filter((_, i) => b.badKinds[i] === 'over-maximum').map((i) => JSON.stringify(b.events[i]!.value)),
    );
    expect(new Set(overMax)).toEqual(new Set(['1000000000000.01', '"1000000000000.01"']));
  });
});

/** Store-row counts computed without rollup or key-layout: Temporal for the local day, cents as integers. */
function naiveStoreCounts(batches: Array<{ store: string; events: readonly EventInput[] }>, zones: Record<string, string>): CounterTable {
  const out: CounterTable = new Map();
  const add = (pk: string, sk: string, attr: string, n: bigint) => {
    if (n === 0n) return; // a zero value adds no cell (absent = 0)
    const row = out.get(pk) ?? out.set(pk, new Map()).get(pk)!;
    const item = row.get(sk) ?? row.set(sk, new Map()).get(sk)!;
    item.set(attr, (item.get(attr) ?? 0n) + n);
  };
  const codes: Record<string, Array<[string, 'count' | 'sum']>> = {
    view: [['v', 'count']],
    page_view: [['pg', 'count']],
    order: [
      ['o', 'count'],
      ['r', 'sum'],
    ],
  };
  for (const { store, events } of batches) {
    for (const e of events) {
      const ts = typeof e.ts === 'number' ? e.ts : Date.parse(e.ts);
      const z = Temporal.Instant.fromEpochMilliseconds(ts).toZonedDateTimeISO(zones[store]!);
      for (const [code, op] of codes[e.type] ?? []) {
        const n = op === 'count' ? 1n : BigInt(Math.round(Number(e.value) * 100));
        const sk = `M${z.year}-${String(z.month).padStart(2, '0')}`;
        add(store, sk, `D${String(z.dayOfYear).padStart(3, '0')}.${code}`, n);
        add(store, sk, `M${String(z.month).padStart(2, '0')}.${code}`, n);
        add(store, 'TOTAL', code, n);
        add(store, 'TOTAL', `Y${z.year}.${code}`, n);
      }
    }
  }
  return out;
}

describe('expectedCounts', () => {
  it('agrees with an independent computation on the store rows', () => {
    const batches = [...generateLoad({ seed: 11, stores: STORES, now: NOW, maxEvents: 30_000, lateShare: 0.3 })];
    const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
    const all = expectedCounts(batches, rules, zones);
    const storeRows: CounterTable = new Map(STORES.map((s) => [s.id, all.get(s.id)!]));
    const diff = diffCounts(naiveStoreCounts(batches, zones), storeRows);
    expect(diff.samples).toEqual([]);
    expect(diff.cells).toBeGreaterThan(100);
    // The leap day exists in Los Angeles (NOW is Feb 29 there) and day 366 does not.
    expect(all.get('LAX')!.get('M2024-02')!.get('D060.v')).toBeGreaterThan(0n);
  });

  it('mixes in extreme values (the maximum, zero) and still agrees', () => {
    const batches = [...generateLoad({ seed: 12, stores: STORES, now: NOW, maxEvents: 20_000, extremeShare: 0.5 })];
    const values = batches
      .flatMap((b) => b.events)
      .filter((e) => e.type === 'order')
      .map((e) => String(e.value));
    expect(values.filter((v) => v === '1000000000000').length).toBeGreaterThan(values.length / 5);
    expect(values.filter((v) => Number(v) === 0).length).toBeGreaterThan(values.length / 5);
    const zones = Object.fromEntries(STORES.map((s) => [s.id, s.timeZone]));
    const all = expectedCounts(batches, rules, zones);
    const storeRows: CounterTable = new Map(STORES.map((s) => [s.id, all.get(s.id)!]));
    expect(diffCounts(naiveStoreCounts(batches, zones), storeRows).samples).toEqual([]);
  });

  it('counts per product and per visitor as the rules say', () => {
    const events: EventInput[] = [
      { type: 'view', ts: '2024-01-31T18:14:00Z', dims: { product: 'P1', visitor: 'V1' } },
      { type: 'view', ts: '2024-01-31T18:16:00Z', dims: { product: 'P1', visitor: 'V1' } },
      { type: 'order_item', ts: '2024-01-31T18:16:00Z', dims: { product: 'P1', visitor: 'V1' }, value: 19.99 },
      { type: 'order', ts: '2024-01-31T18:16:00Z', dims: { visitor: 'V1' }, value: '19.90' },
    ];
    const t = expectedCounts([{ store: 'K', events }], rules, { K: 'Asia/Kathmandu' });
    // 18:14Z is Jan 31 23:59 in Kathmandu (+05:45); 18:16Z is Feb 1 00:01.
    expect(t.get('K')!.get('M2024-01')!.get('D031.v')).toBe(1n);
    expect(t.get('K')!.get('M2024-02')!.get('D032.v')).toBe(1n);
    expect(t.get('K')!.get('TOTAL')!.get('r')).toBe(1990n);
    expect(t.get('K#product#P1')!.get('TOTAL')!.get('r')).toBe(1999n);
    expect(t.get('K#product#P1')!.get('TOTAL')!.get('Y2024.o')).toBe(1n);
    expect(t.get('K#visitor#V1')!.get('TOTAL')!.get('pv#P1')).toBe(2n);
    expect(t.get('K#visitor#V1')!.get('M2024-02')!.get('D032.po#P1')).toBe(1n);
  });

  it('diffCounts finds missing, extra and wrong cells both ways', () => {
    const a: CounterTable = new Map([
      [
        'S',
        new Map([
          [
            'TOTAL',
            new Map([
              ['v', 2n],
              ['o', 1n],
            ]),
          ],
        ]),
      ],
    ]);
    const b: CounterTable = new Map([
      [
        'S',
        new Map([
          [
            'TOTAL',
            new Map([
              ['v', 3n],
              ['r', 5n],
            ]),
          ],
        ]),
      ],
    ]);
    const d = diffCounts(a, b);
    expect(d.mismatches).toBe(3);
    expect(d.samples).toEqual([
      'missing S / TOTAL / o: expected 1',
      'extra S / TOTAL / r = 5',
      'wrong S / TOTAL / v: expected 2, got 3 (+1)',
    ]);
  });
});
