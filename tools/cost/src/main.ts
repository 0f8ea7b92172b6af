import { parseArgs } from 'node:util';
import { costOf, noEventsApplied } from './cost';
import { DEFAULT_MEASURED, DEFAULT_WORKLOAD, DIVISORS, ROW_KINDS, rowFigures, sizeDeployment } from './sizing';

/** `npm run cost -- size` flags: the workload or measured figure each sets. */
const SIZE_FLAGS: Record<string, string> = {
  stores: 'stores',
  visitors: 'visitorsPerMonth',
  avg: 'eventsPerSecondAvg',
  peak: 'eventsPerSecondPeak',
  'events-per-batch': 'eventsPerBatch',
  products: 'productsPerStorePerDay',
  queries: 'queriesPerSecond',
  'bucket-seconds': 'bucketSeconds',
  'keyed-batches': 'keyedBatchShare',
  'rankings-per-store-day': 'rankingsPerStorePerDay',
  'top-history-days': 'topHistoryDays',
  'wcu-per-million': 'writeUnitsPerMillionEvents',
  'rcu-per-million': 'readUnitsPerMillionEvents',
  'rcu-per-query': 'readUnitsPerQuery',
  ...Object.fromEntries(
    ROW_KINDS.flatMap((kind) =>
      [`bytes-per-${kind}-row`, `${kind}-row-entries`, `${kind}-row-counts`].map((flag, i) => [flag, rowFigures(kind)[i]]),
    ),
  ),
  'bytes-per-outbox-entry': 'bytesPerOutboxEntry',
  'bytes-per-idempotency-record': 'bytesPerIdempotencyRecord',
  'bytes-per-store': 'bytesPerStore',
  'bytes-per-dedupe': 'bytesPerDedupeRecord',
  'bytes-per-ranking-member': 'bytesPerRankingMember',
  'bytes-per-large-ranking-member': 'bytesPerLargeRankingMember',
  'bytes-per-cache-version': 'bytesPerCacheVersion',
  'aggregator-eps': 'aggregatorEventsPerSecond',
  'collector-cpu-ms': 'collectorCpuMsPer1000Events',
  'e2e-eps': 'endToEndEventsPerSecondPerRedis',
};

const USAGE = `usage: npm run cost -- [--aggregator URL]... [--writer URL]... [--price USD per 1M write units] [--read-price USD per 1M read units] [--json]
         write and read units and dollars per million events of a running fleet, from its apps' /metrics (bearer METRICS_TOKEN if set)
       npm run cost -- size [--${Object.keys(SIZE_FLAGS).join(' N] [--')} N]
         the sizing of docs/SCALING.md from a workload and measured figures (defaults: that document's)
`;
if (process.argv.includes('--help') || process.argv.includes('-h')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
function fail(code: number, message: string): never {
  process.stderr.write(message);
  process.exit(code);
}
/** A flag's value as a non-negative number, or a positive one if `positive` (a divisor), or exit 2 naming the flag. */
function nonNegative(command: string, flag: string, value: string, what = '', positive = false): number {
  const x = Number(value);
  if (!Number.isFinite(x) || x < 0 || (positive && x === 0))
    fail(2, `${command}: --${flag} must be a ${positive ? 'positive' : 'non-negative'} number${what}, got ${value}\n`);
  return x;
}
/** parseArgs, an unknown or malformed option a usage error (exit 2), not a stack trace. */
function parse<T>(parseThem: () => T): T {
  try {
    return parseThem();
  } catch (err) {
    return fail(2, `tally cost: ${(err as Error).message}\n${USAGE}`);
  }
}

const f = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

if (process.argv[2] === 'size') {
  const options = Object.fromEntries(Object.keys(SIZE_FLAGS).map((flag) => [flag, { type: 'string' as const }]));
  const { values } = parse(() => parseArgs({ args: process.argv.slice(3), options }));
  const workload: Record<string, number> = { ...DEFAULT_WORKLOAD };
  const measured: Record<string, number> = { ...DEFAULT_MEASURED };
  for (const [flag, value] of Object.entries(values)) {
    const name = SIZE_FLAGS[flag]!;
    (name in workload ? workload : measured)[name] = nonNegative('tally cost size', flag, String(value), '', DIVISORS.includes(name));
  }
  const s = sizeDeployment(workload as typeof DEFAULT_WORKLOAD, measured as typeof DEFAULT_MEASURED);
  const gb = (bytes: number, d = 2) => f(bytes / 1e9, d);
  const { rows, rowsByKind, stores, dedupe, idempotency, rankings, cacheVersions, total } = s.redisBytes;
  console.log(`open rows                 ${f(s.openRows)} (${ROW_KINDS.map((k) => `${f(s.open[k])} ${k}`).join(', ')})`);
  console.log(`open rows' memory         ${ROW_KINDS.map((k, i) => `${gb(rowsByKind[k])}${i === 0 ? ' GB' : ''} ${k}`).join(', ')}`);
  console.log(
    `Redis memory              ${gb(total)} GB (rows ${gb(rows)}, rankings ${gb(rankings)}, idempotency records ${gb(idempotency)}, ` +
      `dedupe records ${gb(dedupe)}, cache versions ${gb(cacheVersions)}, stores ${gb(stores, 3)})`,
  );
  console.log(`Redis Cluster masters     ${s.redisMasters}`);
  console.log(`aggregator replicas       ${s.aggregatorReplicas}`);
  console.log(`collector replicas        ${s.collectorReplicas} (${f(s.collectorCoresAtPeak, 2)} cores at peak)`);
  console.log(`write units/s             ${f(s.writeUnitsPerSecondAvg)} average, ${f(s.writeUnitsPerSecondPeak)} peak`);
  console.log(`read units/s              ${f(s.readUnitsPerSecond, 1)}`);
  const m = s.monthly;
  console.log(`per month                 ${f(m.writeUnits / 1e9, 2)} billion write units, ${f(m.readUnits / 1e6, 1)} million read units`);
  console.log(`USD per month             ${f(m.onDemandUsd)} on-demand, ${f(m.provisionedUsd)} provisioned at the average`);
  process.exit(0);
}

// --aggregator and --writer repeat, one per replica; --price and --read-price: DynamoDB on-demand's (us-east-1).
const { values } = parse(() =>
  parseArgs({
    options: {
      aggregator: { type: 'string', multiple: true, default: ['http://127.0.0.1:7403'] },
      writer: { type: 'string', multiple: true, default: ['http://127.0.0.1:7404'] },
      price: { type: 'string', default: '0.625' },
      'read-price': { type: 'string', default: '0.125' },
      json: { type: 'boolean', default: false },
    },
  }),
);
const price = nonNegative('tally cost', 'price', values.price, ' of USD per million write units');
const readPrice = nonNegative('tally cost', 'read-price', values['read-price'], ' of USD per million read units');
const fetchText = async (base: string) => {
  try {
    const token = process.env['METRICS_TOKEN'];
    const res = await fetch(new URL('/metrics', base), token ? { headers: { authorization: `Bearer ${token}` } } : {});
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.text();
  } catch (err) {
    return fail(1, `tally cost: cannot read ${base}/metrics: ${(err as Error).message}\n`);
  }
};
const aggregatorMetrics = await Promise.all(values.aggregator.map(fetchText));
const report = costOf(aggregatorMetrics, await Promise.all(values.writer.map(fetchText)), price, readPrice);
// No events applied: nothing to price per event (units / 0), so say why rather than print $0.
const aggregatorUrls = values.aggregator.map((base) => new URL('/metrics', base).href);
const noEvents = noEventsApplied(aggregatorUrls, aggregatorMetrics);
if (noEvents) fail(1, `tally cost: ${noEvents}\n`);
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`events applied            ${f(report.events)}`);
  console.log(`UpdateItem calls          ${f(report.updateItems)}`);
  console.log(`write units consumed      ${f(report.writeUnits)}`);
  console.log(`write units per 1M events ${f(report.writeUnitsPerMillionEvents)}`);
  console.log(`read units consumed       ${f(report.readUnits)}`);
  console.log(`read units per 1M events  ${f(report.readUnitsPerMillionEvents)}`);
  console.log(
    `USD per 1M events         ${report.dollarsPerMillionEvents.toFixed(4)} (at $${price} per million write units, $${readPrice} per million read units)`,
  );
}
