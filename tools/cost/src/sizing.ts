import { keptForWindow } from '@tally/key-layout';

/**
 * Sizing arithmetic for docs/SCALING.md: a deployment's Redis memory and shards, replicas and DynamoDB units and
 * monthly cost, from a workload and figures measured by `npm run bench` (never from guesses: every measured input
 * names the figure it comes from).
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
  /** Ranking zsets per store and day (default rules: product ViewCount, OrderCount, Revenue; page PageViews), each of
   * productsPerStorePerDay members (as many pages as products; fewer products ordered than viewed: an upper bound). */
  rankingsPerStorePerDay: 4,
  /** TOP_HISTORY_DAYS: days a daily ranking is kept. */
  topHistoryDays: 100,
};
export type Workload = typeof DEFAULT_WORKLOAD;

/** The figures docs/SCALING.md uses, each from the `npm run bench` figure named. */
export const DEFAULT_MEASURED = {
  /** write-cost: write units per million events with the default rules (the run with UniqueVisitors sketches). */
  writeUnitsPerMillionEvents: 965_316,
  /** write-cost: the writers' read units per million events (the sketches' reads before each write; same run). */
  readUnitsPerMillionEvents: 258_780,
  /** query: DynamoDB read units per query (one consistent read of items under 4 KB = 1). */
  readUnitsPerQuery: 1,
  /** scale: Redis bytes per open row and per store. */
  bytesPerOpenRow: 231,
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
export const DIVISORS: readonly string[] = ['eventsPerBatch', 'aggregatorEventsPerSecond', 'endToEndEventsPerSecondPerRedis'];

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
  // Open rows: visitors active within their idle window, and every product viewed today in every store.
  const visitorsPerMinute = w.visitorsPerMonth / (SECONDS_PER_MONTH / 60);
  const openVisitorRows = visitorsPerMinute * w.visitorIdleMinutes;
  const openRows = Math.round(openVisitorRows + w.stores * w.productsPerStorePerDay + w.stores);
  // A batch's dedupe record outlives the window by its slack (libs/key-layout dedupe-window.ts).
  const dedupeRecords = (w.eventsPerSecondAvg / w.eventsPerBatch) * keptForWindow(w.dedupeWindowSeconds);
  const rows = openRows * m.bytesPerOpenRow;
  const stores = w.stores * m.bytesPerStore;
  const dedupe = dedupeRecords * m.bytesPerDedupeRecord;
  // The daily rankings of top lists: every store's of each day kept, and a cache version per visitor row written in the
  // last 2 days (each visitor a day, as many as a month's visitors make; no other row's history is cached).
  const members = w.productsPerStorePerDay;
  const perMember = members > LISTPACK_MEMBERS ? m.bytesPerLargeRankingMember : m.bytesPerRankingMember;
  const rankings = w.stores * w.rankingsPerStorePerDay * members * perMember * w.topHistoryDays;
  const cacheVersions = (w.visitorsPerMonth / 30) * CACHE_VERSION_DAYS * m.bytesPerCacheVersion;
  const total = rows + stores + dedupe + rankings + cacheVersions;
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
    redisBytes: { rows, stores, dedupe, rankings, cacheVersions, total },
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
