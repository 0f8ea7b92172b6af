/**
 * Sizing arithmetic for docs/SCALING.md: a deployment's Redis memory and shards, replicas and DynamoDB units and
 * monthly cost, from a workload and figures measured by `npm run bench` (never from guesses: every measured input
 * names the figure it comes from).
 */
export interface Workload {
  stores: number;
  visitorsPerMonth: number;
  eventsPerSecondAvg: number;
  eventsPerSecondPeak: number;
  /** Events per batch (request or libs/client call). */
  eventsPerBatch: number;
  /** Products with views per store and day (their rows stay open until the daily flush). */
  productsPerStorePerDay: number;
  /** Query API requests per second. */
  queriesPerSecond: number;
  /** DEDUPE_WINDOW_SECONDS. */
  dedupeWindowSeconds: number;
  /** The visitor rows' idle flush (default rules: 30 min). */
  visitorIdleMinutes: number;
}

export interface Measured {
  /** write-cost: write units per million events with the default rules. */
  writeUnitsPerMillionEvents: number;
  /** query: DynamoDB read units per query (one eventually consistent read of items under 4 KB = 0.5). */
  readUnitsPerQuery: number;
  /** scale: Redis bytes per open row and per store. */
  bytesPerOpenRow: number;
  bytesPerStore: number;
  /** aggregator-apply: bytes per dedupe record. */
  bytesPerDedupeRecord: number;
  /** aggregator-apply: events/s one aggregator process applies. */
  aggregatorEventsPerSecond: number;
  /** collector-ingest: collector CPU ms per 1,000 events (1000-event batches). */
  collectorCpuMsPer1000Events: number;
  /** ingest-e2e: events/s end to end on one Redis (everything on one 2-core machine). */
  endToEndEventsPerSecondPerRedis: number;
}

export interface Prices {
  /** USD per million write request units, on-demand. */
  onDemandWrite: number;
  /** USD per million read request units, on-demand. */
  onDemandRead: number;
  /** USD per WCU-hour and RCU-hour, provisioned. */
  provisionedWcuHour: number;
  provisionedRcuHour: number;
}

const US_EAST_1: Prices = { onDemandWrite: 0.625, onDemandRead: 0.125, provisionedWcuHour: 0.00065, provisionedRcuHour: 0.00013 };

const SECONDS_PER_MONTH = 30 * 86_400;
const HOURS_PER_MONTH = 730;

export interface Sizing {
  openRows: number;
  redisBytes: { rows: number; stores: number; dedupe: number; total: number };
  /** Redis Cluster masters: peak over half the measured per-Redis end-to-end rate, at least 3 (memory fits each). */
  redisMasters: number;
  aggregatorReplicas: number;
  collectorCoresAtPeak: number;
  collectorReplicas: number;
  writeUnitsPerSecondAvg: number;
  writeUnitsPerSecondPeak: number;
  readUnitsPerSecond: number;
  monthly: { writeUnits: number; readUnits: number; onDemandUsd: number; provisionedUsd: number };
}

export function sizeDeployment(w: Workload, m: Measured, p: Prices = US_EAST_1): Sizing {
  // Open rows: visitors active within their idle window, and every product viewed today in every store.
  const visitorsPerMinute = w.visitorsPerMonth / (SECONDS_PER_MONTH / 60);
  const openVisitorRows = visitorsPerMinute * w.visitorIdleMinutes;
  const openRows = Math.round(openVisitorRows + w.stores * w.productsPerStorePerDay + w.stores);
  const dedupeRecords = (w.eventsPerSecondAvg / w.eventsPerBatch) * w.dedupeWindowSeconds;
  const rows = openRows * m.bytesPerOpenRow;
  const stores = w.stores * m.bytesPerStore;
  const dedupe = dedupeRecords * m.bytesPerDedupeRecord;
  const total = rows + stores + dedupe;
  const redisMasters = Math.max(3, Math.ceil(w.eventsPerSecondPeak / (m.endToEndEventsPerSecondPerRedis / 2)));
  const writeUnitsPerSecondAvg = (w.eventsPerSecondAvg * m.writeUnitsPerMillionEvents) / 1e6;
  const writeUnitsPerSecondPeak = (w.eventsPerSecondPeak * m.writeUnitsPerMillionEvents) / 1e6;
  const readUnitsPerSecond = w.queriesPerSecond * m.readUnitsPerQuery;
  const writeUnits = writeUnitsPerSecondAvg * SECONDS_PER_MONTH;
  const readUnits = readUnitsPerSecond * SECONDS_PER_MONTH;
  const collectorCoresAtPeak = (w.eventsPerSecondPeak / 1000) * (m.collectorCpuMsPer1000Events / 1000);
  return {
    openRows,
    redisBytes: { rows, stores, dedupe, total },
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
