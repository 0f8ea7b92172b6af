import { keptForWindow } from '@tally/key-layout';

/**
 * Sizing arithmetic for docs/SCALING.md: a deployment's Redis memory and shards, replicas and DynamoDB units and
 * monthly cost, from a workload and figures measured by `npm run bench` and tools/bench's tests (never from guesses:
 * every measured input names the figure or test it comes from).
 */
/** docs/SCALING.md's workload (`npm run cost -- size` flags change it). */
export const DEFAULT_WORKLOAD = {
  stores: 10_000,
  visitorsPerMonth: 20_000_000,
  eventsPerSecondAvg: 5_000,
  eventsPerSecondPeak: 50_000,
  /** Events per batch (request or libs/client call). */
  eventsPerBatch: 100,
  /** Products with views per store and day (their rows stay open until the daily flush). */
  productsPerStorePerDay: 100,
  /** Query API requests per second. */
  queriesPerSecond: 100,
  /** DEDUPE_WINDOW_SECONDS. */
  dedupeWindowSeconds: 86_400,
  /** The visitor rows' idle flush (default rules: 30 min). */
  visitorIdleMinutes: 30,
  /** BUCKET_SECONDS: a row keeps an outbox entry per bucket and metric it counted in until its flush. */
  bucketSeconds: 900,
  /** Share of batches sent with an Idempotency-Key (tools/loadgen and the README's examples send one with each). */
  keyedBatchShare: 1,
  /** Ranking zsets per store and day (default rules: product ViewCount, OrderCount, Revenue; page PageViews), each of
   * productsPerStorePerDay members (as many pages as products; fewer products ordered than viewed: an upper bound). */
  rankingsPerStorePerDay: 4,
  /** TOP_HISTORY_DAYS: days a daily ranking is kept. */
  topHistoryDays: 100,
};
export type Workload = typeof DEFAULT_WORKLOAD;

/** The figures docs/SCALING.md uses, each from the `npm run bench` figure or tools/bench test named. */
export const DEFAULT_MEASURED = {
  /** write-cost: write units per million events with the default rules (the run with UniqueVisitors sketches). */
  writeUnitsPerMillionEvents: 965_316,
  /** write-cost: the writers' read units per million events (the sketches' reads before each write; same run). */
  readUnitsPerMillionEvents: 258_780,
  /** query: DynamoDB read units per query (one consistent read of items under 4 KB = 1). */
  readUnitsPerQuery: 1,
  /**
   * Rows (tools/bench row-memory.int.test.ts): Redis bytes per open row of each kind at its fullest, a day of this
   * workload's store on the default rules with BUCKET_SECONDS 900 (product and page rows before their daily flush,
   * the store row before its hourly one, visitor rows within their session and idle wait), its outbox entries then,
   * and its counts (an event and a counter each, which bound its entries whatever the buckets).
   */
  bytesPerProductRow: 9_281,
  productRowEntries: 128.1,
  productRowCounts: 301.8,
  bytesPerPageRow: 2_750,
  pageRowEntries: 71.2,
  pageRowCounts: 130.2,
  bytesPerVisitorRow: 8_224,
  visitorRowEntries: 212.8,
  visitorRowCounts: 1_066.9,
  bytesPerStoreRow: 5_138,
  storeRowEntries: 16,
  storeRowCounts: 1_795.8,
  /** The same run: bytes per outbox entry. */
  bytesPerOutboxEntry: 32.5,
  /** row-memory.int.test.ts: bytes per idempotency record (kept two dedupe windows and the slack). */
  bytesPerIdempotencyRecord: 216.4,
  /** scale: Redis bytes per store. */
  bytesPerStore: 966,
  /** aggregator-apply: bytes per dedupe record. */
  bytesPerDedupeRecord: 160,
  /** scale: bytes per member of a daily ranking of up to 128 members (a listpack), and of more (a skiplist). */
  bytesPerRankingMember: 9.8,
  bytesPerLargeRankingMember: 102.2,
  /** scale: bytes per cache version (one per row written, kept 2 days after its last write). */
  bytesPerCacheVersion: 148.4,
  /** aggregator-apply: events/s one aggregator process applies (100-event batches, as the default workload's). */
  aggregatorEventsPerSecond: 29_264,
  /** collector-ingest: collector CPU ms per 1,000 events (100-event batches, as the default workload's). */
  collectorCpuMsPer1000Events: 11.97,
  /** ingest-e2e: events/s end to end on one Redis (everything on one 2-core machine; 100-event batches). */
  endToEndEventsPerSecondPerRedis: 27_330,
};
export type Measured = typeof DEFAULT_MEASURED;

/** The workload and measured figures sizeDeployment divides by: each must be above 0 (0 sizes an infinite deployment). */
export const DIVISORS: readonly string[] = [
  'eventsPerBatch',
  'bucketSeconds',
  'aggregatorEventsPerSecond',
  'endToEndEventsPerSecondPerRedis',
];

/** The kinds of rows the default rules keep, as DEFAULT_MEASURED names their figures. */
export const ROW_KINDS = ['product', 'page', 'visitor', 'store'] as const;
type RowKind = (typeof ROW_KINDS)[number];
/** The names of a kind of row's measured figures: bytes per row, outbox entries and counts. */
export const rowFigures = (kind: RowKind) =>
  [`bytesPer${kind[0]!.toUpperCase()}${kind.slice(1)}Row`, `${kind}RowEntries`, `${kind}RowCounts`] as Array<keyof Measured>;
/** The BUCKET_SECONDS the rows' figures were measured at. */
const ROWS_MEASURED_AT_BUCKET_SECONDS = 900;

/**
 * Bytes per open row of `kind` with buckets of `bucketSeconds`. Its outbox holds an entry per bucket and metric it
 * counted in until its flush: with shorter buckets than measured, up to as many more entries as more buckets, never
 * more than its counts; with longer ones, at most the entries measured (an upper bound).
 */
function bytesPerRow(m: Measured, kind: RowKind, bucketSeconds: number): number {
  const [bytes, entries, counts] = rowFigures(kind).map((name) => m[name]) as [number, number, number];
  const more = Math.min(counts, entries * (ROWS_MEASURED_AT_BUCKET_SECONDS / bucketSeconds)) - entries;
  return bytes + Math.max(0, more) * m.bytesPerOutboxEntry;
}

/** us-east-1 prices in USD: per million write and read request units on-demand, per WCU-hour and RCU-hour provisioned. */
const US_EAST_1 = { onDemandWrite: 0.625, onDemandRead: 0.125, provisionedWcuHour: 0.00065, provisionedRcuHour: 0.00013 };

const SECONDS_PER_MONTH = 30 * 86_400;
/** Redis's zset-max-listpack-entries: a zset of more members is a skiplist (bytesPerLargeRankingMember). */
const LISTPACK_MEMBERS = 128;
/** Days a row's cache version outlives its last write (libs/buckets BucketStore cacheVersionTtlSeconds). */
const CACHE_VERSION_DAYS = 2;
const HOURS_PER_MONTH = 730;

export function sizeDeployment(w: Workload, m: Measured, p = US_EAST_1) {
  const inputs: Record<string, number> = { ...w, ...m };
  for (const name of DIVISORS) if (!(inputs[name]! > 0)) throw new RangeError(`${name} must be above 0, got ${inputs[name]}`);
  // Open rows at the daily flush: every product viewed today in every store and as many pages (as the rankings
  // assume), the store rows, and the visitors active within their idle window.
  const visitorsPerMinute = w.visitorsPerMonth / (SECONDS_PER_MONTH / 60);
  const open: Record<RowKind, number> = {
    product: w.stores * w.productsPerStorePerDay,
    page: w.stores * w.productsPerStorePerDay,
    visitor: Math.round(visitorsPerMinute * w.visitorIdleMinutes),
    store: w.stores,
  };
  const openRows = ROW_KINDS.reduce((n, kind) => n + open[kind], 0);
  const rowsByKind = Object.fromEntries(ROW_KINDS.map((k) => [k, open[k] * bytesPerRow(m, k, w.bucketSeconds)])) as Record<RowKind, number>;
  const rows = ROW_KINDS.reduce((n, kind) => n + rowsByKind[kind], 0);
  // A batch's dedupe record outlives the window by its slack (libs/key-layout dedupe-window.ts); a keyed batch's
  // idempotency record is kept a window longer (libs/intake fingerprintTtlSeconds).
  const batchesPerSecond = w.eventsPerSecondAvg / w.eventsPerBatch;
  const dedupeRecords = batchesPerSecond * keptForWindow(w.dedupeWindowSeconds);
  const idempotencyRecords = w.keyedBatchShare * batchesPerSecond * (w.dedupeWindowSeconds + keptForWindow(w.dedupeWindowSeconds));
  const stores = w.stores * m.bytesPerStore;
  const dedupe = dedupeRecords * m.bytesPerDedupeRecord;
  const idempotency = idempotencyRecords * m.bytesPerIdempotencyRecord;
  // The daily rankings of top lists: every store's of each day kept, and a cache version per visitor row written in the
  // last 2 days (each visitor a day, as many as a month's visitors make; no other row's history is cached).
  const members = w.productsPerStorePerDay;
  const perMember = members > LISTPACK_MEMBERS ? m.bytesPerLargeRankingMember : m.bytesPerRankingMember;
  const rankings = w.stores * w.rankingsPerStorePerDay * members * perMember * w.topHistoryDays;
  const cacheVersions = (w.visitorsPerMonth / 30) * CACHE_VERSION_DAYS * m.bytesPerCacheVersion;
  const total = rows + stores + dedupe + idempotency + rankings + cacheVersions;
  // Redis Cluster masters: peak over half the measured per-Redis end-to-end rate, at least 3 (memory fits each).
  const redisMasters = Math.max(3, Math.ceil(w.eventsPerSecondPeak / (m.endToEndEventsPerSecondPerRedis / 2)));
  const writeUnitsPerSecondAvg = (w.eventsPerSecondAvg * m.writeUnitsPerMillionEvents) / 1e6;
  const writeUnitsPerSecondPeak = (w.eventsPerSecondPeak * m.writeUnitsPerMillionEvents) / 1e6;
  // Queries, and the writers' reads of the sketches they union (they follow the events, so the average).
  const readUnitsPerSecond = w.queriesPerSecond * m.readUnitsPerQuery + (w.eventsPerSecondAvg * m.readUnitsPerMillionEvents) / 1e6;
  const writeUnits = writeUnitsPerSecondAvg * SECONDS_PER_MONTH;
  const readUnits = readUnitsPerSecond * SECONDS_PER_MONTH;
  const collectorCoresAtPeak = (w.eventsPerSecondPeak / 1000) * (m.collectorCpuMsPer1000Events / 1000);
  return {
    openRows,
    open,
    redisBytes: { rows, rowsByKind, stores, dedupe, idempotency, rankings, cacheVersions, total },
    redisMasters,
    // Peak over half of one process's measured rate (headroom), at least 2 for availability.
    aggregatorReplicas: Math.max(2, Math.ceil(w.eventsPerSecondPeak / (m.aggregatorEventsPerSecond / 2))),
    collectorCoresAtPeak,
    collectorReplicas: Math.max(2, Math.ceil(collectorCoresAtPeak / 0.5)),
    writeUnitsPerSecondAvg,
    writeUnitsPerSecondPeak,
    readUnitsPerSecond,
    monthly: {
      writeUnits,
      readUnits,
      onDemandUsd: (writeUnits / 1e6) * p.onDemandWrite + (readUnits / 1e6) * p.onDemandRead,
      // Provisioned at the average (auto scaling follows the peaks; bursts above it are billed as it scales).
      provisionedUsd:
        writeUnitsPerSecondAvg * HOURS_PER_MONTH * p.provisionedWcuHour + readUnitsPerSecond * HOURS_PER_MONTH * p.provisionedRcuHour,
    },
  };
}
