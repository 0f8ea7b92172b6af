import { describe, expect, it } from 'vitest';
import { metricValue as sumMetric } from '@tally/testing';
import { costOf, noEventsApplied } from './cost';
import { DEFAULT_MEASURED, DEFAULT_WORKLOAD, sizeDeployment } from './sizing';

const agg = `# HELP tally_events_applied_total x
tally_events_applied_total{app="bucket-aggregator"} 500000`;
const writer = `tally_dynamodb_consumed_write_units_total{operation="UpdateItem",app="dynamo-writer"} 1200
tally_dynamodb_consumed_read_units_total{operation="GetItem",app="dynamo-writer"} 3
tally_dynamodb_requests_total{operation="UpdateItem",outcome="ok",app="dynamo-writer"} 1100
tally_dynamodb_requests_total{operation="UpdateItem",outcome="condition_failed",app="dynamo-writer"} 7`;

describe('cost', () => {
  it('sums metrics by name and labels', () => {
    expect(sumMetric(writer, 'tally_dynamodb_requests_total')).toBe(1107);
    expect(sumMetric(writer, 'tally_dynamodb_requests_total', { outcome: 'ok' })).toBe(1100);
  });
  it('reports write and read units and dollars per million events over replicas', () => {
    const r = costOf([agg, agg], [writer], 1.25, 0.25);
    expect(r.events).toBe(1_000_000);
    expect(r.writeUnits).toBe(1200);
    expect(r.readUnits).toBe(3);
    expect(r.updateItems).toBe(1100);
    expect(r.writeUnitsPerMillionEvents).toBe(1200);
    expect(r.readUnitsPerMillionEvents).toBe(3);
    // 1,200 write units at $1.25 and 3 read units at $0.25 per million.
    expect(r.dollarsPerMillionEvents).toBeCloseTo(0.0015 + 0.00000075, 12);
  });
  it('reports zero per million when nothing was applied', () => {
    const r = costOf([''], [writer], 1, 1);
    expect([r.writeUnitsPerMillionEvents, r.readUnitsPerMillionEvents, r.dollarsPerMillionEvents]).toEqual([0, 0, 0]);
  });
  it('says why there is no cost per event: the events metric missing (URLs swapped?) or 0 (no traffic) at each URL', () => {
    const a = 'http://a:7403/metrics';
    const b = 'http://b:7403/metrics';
    expect(noEventsApplied([a, b], [agg, ''])).toBeUndefined();
    const zero = 'tally_events_applied_total{app="bucket-aggregator"} 0';
    expect(noEventsApplied([a], [writer])).toBe(
      `tally_events_applied_total is missing at ${a}; check that each --aggregator URL is a bucket-aggregator's and each --writer URL a dynamo-writer's (not swapped)`,
    );
    expect(noEventsApplied([a, b], [zero, zero])).toBe(
      `tally_events_applied_total is 0 at ${a}, 0 at ${b}; no events applied yet: send traffic first (e.g. npm run loadgen), then run this again`,
    );
    expect(noEventsApplied([a, b], [zero, writer])).toMatch(/^tally_events_applied_total is 0 at \S+, missing at \S+; check that/);
  });
});

describe('sizing', () => {
  const workload = DEFAULT_WORKLOAD;
  const measured = {
    writeUnitsPerMillionEvents: 1_000_000,
    readUnitsPerMillionEvents: 100_000,
    readUnitsPerQuery: 0.5,
    // Per kind of row: bytes at its fullest (BUCKET_SECONDS 900), its outbox entries then, and its counts.
    bytesPerProductRow: 9_000,
    productRowEntries: 100,
    productRowCounts: 300,
    bytesPerPageRow: 3_000,
    pageRowEntries: 70,
    pageRowCounts: 130,
    bytesPerVisitorRow: 8_000,
    visitorRowEntries: 200,
    visitorRowCounts: 1_000,
    bytesPerStoreRow: 5_000,
    storeRowEntries: 16,
    storeRowCounts: 1_800,
    bytesPerOutboxEntry: 30,
    bytesPerIdempotencyRecord: 200,
    bytesPerStore: 1_000,
    bytesPerDedupeRecord: 150,
    bytesPerRankingMember: 10,
    bytesPerLargeRankingMember: 100,
    bytesPerCacheVersion: 120,
    aggregatorEventsPerSecond: 80_000,
    collectorCpuMsPer1000Events: 3,
    endToEndEventsPerSecondPerRedis: 40_000,
  };
  // Each kind of open row at its own bytes: 1,000,000 product rows with a day's outbox and sketch, as many page rows,
  // 13,889 visitor rows, 10,000 store rows.
  const ROWS = 1_000_000 * 9_000 + 1_000_000 * 3_000 + 13_889 * 8_000 + 10_000 * 5_000;
  // An idempotency record per keyed batch (all of them by default: 50 batches/s), kept a dedupe window (86,400 s)
  // plus the dedupe record's 95,040 s.
  const IDEMPOTENCY = 50 * (86_400 + 95_040) * 200;
  it('derives memory, shards, replicas and units from the workload and the measured figures', () => {
    const s = sizeDeployment(workload, measured);
    // 20M visitors / 43,200 minutes * 30 = 13,889 visitor rows; 1,000,000 product and as many page rows; 10,000 store rows.
    expect(s.open).toEqual({ product: 1_000_000, page: 1_000_000, visitor: 13_889, store: 10_000 });
    expect(s.openRows).toBe(2_023_889);
    expect(s.redisBytes.rows).toBe(ROWS);
    expect(s.redisBytes.dedupe).toBe(50 * (86_400 + 8_640) * 150); // a record outlives the day by its 10% slack
    expect(s.redisBytes.idempotency).toBe(IDEMPOTENCY);
    // 10,000 stores' 4 rankings a day of 100 members (a listpack each: 10 B a member), kept 100 days.
    expect(s.redisBytes.rankings).toBe(10_000 * 4 * 100 * 10 * 100);
    // A cache version per visitor row written in the last 2 days: 666,667 visitors a day (none for products, stores).
    expect(s.redisBytes.cacheVersions).toBeCloseTo((20_000_000 / 30) * 2 * 120, 0);
    expect(s.redisBytes.total).toBeCloseTo(
      ROWS + 10_000 * 1_000 + 50 * (86_400 + 8_640) * 150 + IDEMPOTENCY + 4e9 + (20_000_000 / 30) * 240,
      0,
    );
    expect(s.redisMasters).toBe(3);
    expect(s.aggregatorReplicas).toBe(2);
    expect(s.collectorCoresAtPeak).toBeCloseTo(0.15, 10);
    expect(s.writeUnitsPerSecondPeak).toBe(50_000);
    expect(s.monthly.writeUnits).toBe(5_000 * 2_592_000);
    // Reads: 100 queries/s x 0.5, and the writers' 100,000 per million of the 5,000 events/s on average.
    expect(s.readUnitsPerSecond).toBe(50 + 500);
    expect(s.monthly.readUnits).toBe(550 * 2_592_000);
    expect(s.monthly.onDemandUsd).toBeCloseTo(5_000 * 2.592 * 0.625 + 550 * 2.592 * 0.125, 6);
    expect(s.monthly.provisionedUsd).toBeCloseTo(5_000 * 730 * 0.00065 + 550 * 730 * 0.00013, 6);
  });
  it('sizes each kind of open row at its own measured bytes, not all at one figure', () => {
    const s = sizeDeployment(workload, measured);
    expect(s.redisBytes.rowsByKind).toEqual({ product: 9e9, page: 3e9, visitor: 13_889 * 8_000, store: 5e7 });
    // Twice the products: twice the product and page rows.
    const more = sizeDeployment({ ...workload, productsPerStorePerDay: 200 }, measured).redisBytes.rowsByKind;
    expect([more.product, more.page]).toEqual([18e9, 6e9]);
  });
  it("grows a row's outbox with the buckets of its flush interval, up to its counts", () => {
    const rows = (bucketSeconds: number) => sizeDeployment({ ...workload, bucketSeconds }, measured).redisBytes.rowsByKind;
    // 60-s buckets, 15 times as many: product rows 100 entries → 300 (their counts), page rows 70 → 130, visitor rows
    // 200 → 1,000, the store row 16 → 240; 30 B an entry more.
    expect(rows(60)).toEqual({
      product: 1_000_000 * (9_000 + 200 * 30),
      page: 1_000_000 * (3_000 + 60 * 30),
      visitor: 13_889 * (8_000 + 800 * 30),
      store: 10_000 * (5_000 + 224 * 30),
    });
    // 450-s buckets: twice the entries, within the counts but the store row's.
    expect(rows(450).product).toBe(1_000_000 * (9_000 + 100 * 30));
    // Longer buckets than measured: at most the entries measured.
    expect(rows(3_600)).toEqual(rows(900));
  });
  it('counts an idempotency record per keyed batch, kept two dedupe windows and the slack', () => {
    const idempotency = (w: Partial<typeof workload>) => sizeDeployment({ ...workload, ...w }, measured).redisBytes.idempotency;
    expect(idempotency({})).toBe(IDEMPOTENCY);
    expect(idempotency({ keyedBatchShare: 0.5 })).toBe(IDEMPOTENCY / 2);
    expect(idempotency({ keyedBatchShare: 0 })).toBe(0);
    // A 1-hour window: 3,600 + 3,960 s.
    expect(idempotency({ dedupeWindowSeconds: 3_600 })).toBe(50 * (3_600 + 3_960) * 200);
  });
  it('sizes the rankings by the days kept, and a ranking past 128 members at the skiplist bytes', () => {
    expect(sizeDeployment({ ...workload, topHistoryDays: 30 }, measured).redisBytes.rankings).toBe(10_000 * 4 * 100 * 10 * 30);
    expect(sizeDeployment({ ...workload, productsPerStorePerDay: 128 }, measured).redisBytes.rankings).toBe(10_000 * 4 * 128 * 10 * 100);
    expect(sizeDeployment({ ...workload, productsPerStorePerDay: 129 }, measured).redisBytes.rankings).toBe(10_000 * 4 * 129 * 100 * 100);
  });
  it('refuses a 0 it divides by (events per batch, bucket seconds, aggregator and end-to-end events/s) rather than size an infinite deployment', () => {
    expect(() => sizeDeployment({ ...workload, eventsPerBatch: 0 }, measured)).toThrow('eventsPerBatch must be above 0, got 0');
    expect(() => sizeDeployment({ ...workload, bucketSeconds: 0 }, measured)).toThrow('bucketSeconds must be above 0, got 0');
    expect(() => sizeDeployment(workload, { ...measured, aggregatorEventsPerSecond: 0 })).toThrow(
      'aggregatorEventsPerSecond must be above 0',
    );
    expect(() => sizeDeployment(workload, { ...measured, endToEndEventsPerSecondPerRedis: 0 })).toThrow(
      'endToEndEventsPerSecondPerRedis must be above 0',
    );
    // Every other input may be 0 and sizes finitely.
    const zeros = (o: Record<string, number>, keep: string[]) =>
      Object.fromEntries(Object.keys(o).map((k) => [k, keep.includes(k) ? o[k] : 0]));
    const s = sizeDeployment(
      zeros(workload, ['eventsPerBatch', 'bucketSeconds']) as typeof workload,
      zeros(DEFAULT_MEASURED, ['aggregatorEventsPerSecond', 'endToEndEventsPerSecondPerRedis']) as typeof DEFAULT_MEASURED,
    );
    expect(JSON.stringify(s)).not.toMatch(/null|Infinity/);
    expect([s.redisBytes.total, s.redisMasters, s.aggregatorReplicas, s.monthly.onDemandUsd]).toEqual([0, 3, 2, 0]);
  });
});
