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
};
export type Workload = typeof DEFAULT_WORKLOAD;

/**
 * The measured figures the sizing takes, each from the `npm run bench` figure named. `npm run cost -- size` reads
 * them from docs/BENCHMARKS.md (benchmarks.ts), except the {@link FIXED_MEASURED} ones.
 */
export interface Measured {
  /** write-cost: write units per million events with the default rules. */
  writeUnitsPerMillionEvents: number;
  /** query: DynamoDB read units per query. */
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

/** The figures docs/BENCHMARKS.md's current runs do not print, with where they come from. */
export const FIXED_MEASURED = {
  readUnitsPerQuery: {
    value: 0.5,
    from: 'bench query: one DynamoDB request per query within two months, items under 4 KB, read eventually consistent',
  },
  bytesPerStore: { value: 839, from: 'bench scale, 2026-12-02: 10,000 stores against 10, both with 10,000 open rows' },
} satisfies { [K in keyof Measured]?: { value: number; from: string } };

/** us-east-1 prices in USD: per million write and read request units on-demand, per WCU-hour and RCU-hour provisioned. */
const US_EAST_1 = { onDemandWrite: 0.625, onDemandRead: 0.125, provisionedWcuHour: 0.00065, provisionedRcuHour: 0.00013 };

const SECONDS_PER_MONTH = 30 * 86_400;
const HOURS_PER_MONTH = 730;

export function sizeDeployment(w: Workload, m: Measured, p = US_EAST_1) {
  // Open rows: visitors active within their idle window, and every product viewed today in every store.
  const visitorsPerMinute = w.visitorsPerMonth / (SECONDS_PER_MONTH / 60);
  const openVisitorRows = visitorsPerMinute * w.visitorIdleMinutes;
  const openRows = Math.round(openVisitorRows + w.stores * w.productsPerStorePerDay + w.stores);
  const dedupeRecords = (w.eventsPerSecondAvg / w.eventsPerBatch) * w.dedupeWindowSeconds;
  const rows = openRows * m.bytesPerOpenRow;
  const stores = w.stores * m.bytesPerStore;
  const dedupe = dedupeRecords * m.bytesPerDedupeRecord;
  const total = rows + stores + dedupe;
  // Redis Cluster masters: peak over half the measured per-Redis end-to-end rate, at least 3 (memory fits each).
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

/** The sizing as `npm run cost -- size` prints it (docs/SCALING.md "Result"). */
export function formatSizing(s: ReturnType<typeof sizeDeployment>): string {
  const f = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const gb = (bytes: number, d = 2) => f(bytes / 1e9, d);
  const { rows, stores, dedupe, total } = s.redisBytes;
  const m = s.monthly;
  return [
    `open rows                 ${f(s.openRows)}`,
    `Redis memory              ${gb(total)} GB (rows ${gb(rows)}, stores ${gb(stores, 3)}, dedupe records ${gb(dedupe)})`,
    `Redis Cluster masters     ${s.redisMasters}`,
    `aggregator replicas       ${s.aggregatorReplicas}`,
    `collector replicas        ${s.collectorReplicas} (${f(s.collectorCoresAtPeak, 2)} cores at peak)`,
    `write units/s             ${f(s.writeUnitsPerSecondAvg)} average, ${f(s.writeUnitsPerSecondPeak)} peak`,
    `read units/s              ${f(s.readUnitsPerSecond, 1)}`,
    `per month                 ${f(m.writeUnits / 1e9, 2)} billion write units, ${f(m.readUnits / 1e6, 1)} million read units`,
    `USD per month             ${f(m.onDemandUsd)} on-demand, ${f(m.provisionedUsd)} provisioned at the average`,
  ].join('\n');
}
