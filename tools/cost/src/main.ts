import { parseArgs } from 'node:util';
import { costOf } from './cost';
import { sizeDeployment, type Measured, type Workload } from './sizing';

// npm run cost -- size [--stores N] [--visitors N] [--avg N] [--peak N] [--wcu-per-million N] ...: the sizing of
// docs/SCALING.md from a workload and measured figures (defaults: that document's workload and figures).
if (process.argv[2] === 'size') {
  const num = { type: 'string' } as const;
  const { values: v } = parseArgs({
    args: process.argv.slice(3),
    options: {
      stores: num,
      visitors: num,
      avg: num,
      peak: num,
      'events-per-batch': num,
      products: num,
      queries: num,
      'wcu-per-million': num,
      'rcu-per-query': num,
      'bytes-per-row': num,
      'bytes-per-store': num,
      'bytes-per-dedupe': num,
      'aggregator-eps': num,
      'collector-cpu-ms': num,
      'e2e-eps': num,
    },
  });
  const n = (name: keyof typeof v, dflt: number) => {
    const x = v[name] === undefined ? dflt : Number(v[name]);
    if (!Number.isFinite(x) || x < 0) {
      process.stderr.write(`tally cost size: --${name} must be a non-negative number, got ${v[name]}\n`);
      process.exit(2);
    }
    return x;
  };
  const workload: Workload = {
    stores: n('stores', 10_000),
    visitorsPerMonth: n('visitors', 20_000_000),
    eventsPerSecondAvg: n('avg', 5_000),
    eventsPerSecondPeak: n('peak', 50_000),
    eventsPerBatch: n('events-per-batch', 100),
    productsPerStorePerDay: n('products', 100),
    queriesPerSecond: n('queries', 100),
    dedupeWindowSeconds: 86_400,
    visitorIdleMinutes: 30,
  };
  const measured: Measured = {
    writeUnitsPerMillionEvents: n('wcu-per-million', 931_852),
    readUnitsPerQuery: n('rcu-per-query', 0.5),
    bytesPerOpenRow: n('bytes-per-row', 232),
    bytesPerStore: n('bytes-per-store', 839),
    bytesPerDedupeRecord: n('bytes-per-dedupe', 154),
    aggregatorEventsPerSecond: n('aggregator-eps', 81_864),
    collectorCpuMsPer1000Events: n('collector-cpu-ms', 2.75),
    endToEndEventsPerSecondPerRedis: n('e2e-eps', 40_109),
  };
  const s = sizeDeployment(workload, measured);
  const f = (x: number, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  console.log(JSON.stringify({ workload, measured }));
  console.log(`open rows                 ${f(s.openRows)}`);
  console.log(
    `Redis memory              ${f(s.redisBytes.total / 1e9, 2)} GB (rows ${f(s.redisBytes.rows / 1e9, 2)}, stores ${f(s.redisBytes.stores / 1e9, 3)}, dedupe records ${f(s.redisBytes.dedupe / 1e9, 2)})`,
  );
  console.log(`Redis Cluster masters     ${s.redisMasters}`);
  console.log(`aggregator replicas       ${s.aggregatorReplicas}`);
  console.log(`collector replicas        ${s.collectorReplicas} (${f(s.collectorCoresAtPeak, 2)} cores at peak)`);
  console.log(`write units/s             ${f(s.writeUnitsPerSecondAvg)} average, ${f(s.writeUnitsPerSecondPeak)} peak`);
  console.log(`read units/s              ${f(s.readUnitsPerSecond, 1)}`);
  console.log(
    `per month                 ${f(s.monthly.writeUnits / 1e9, 2)} billion write units, ${f(s.monthly.readUnits / 1e6, 1)} million read units`,
  );
  console.log(`USD per month             ${f(s.monthly.onDemandUsd)} on-demand, ${f(s.monthly.provisionedUsd)} provisioned at the average`);
  process.exit(0);
}

// tools/cost: write units and dollars per million events of a running fleet, from the apps' /metrics.
//   npm run cost -- --aggregator http://127.0.0.1:7403 --writer http://127.0.0.1:7404 [--price 0.625]
// --aggregator and --writer may repeat (one per replica). --price is USD per million write request units
// (DynamoDB on-demand; check your region's price).
const { values } = parseArgs({
  options: {
    aggregator: { type: 'string', multiple: true, default: ['http://127.0.0.1:7403'] },
    writer: { type: 'string', multiple: true, default: ['http://127.0.0.1:7404'] },
    price: { type: 'string', default: '0.625' },
    json: { type: 'boolean', default: false },
  },
});
const price = Number(values.price);
if (!Number.isFinite(price) || price < 0) {
  process.stderr.write(`tally cost: --price must be a non-negative number of USD per million write units, got ${values.price}\n`);
  process.exit(2);
}
const fetchText = async (base: string) => {
  try {
    const res = await fetch(new URL('/metrics', base));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.text();
  } catch (err) {
    process.stderr.write(`tally cost: cannot read ${base}/metrics: ${(err as Error).message}\n`);
    process.exit(1);
  }
};
const report = costOf(await Promise.all(values.aggregator!.map(fetchText)), await Promise.all(values.writer!.map(fetchText)), price);
if (values.json) console.log(JSON.stringify(report));
else {
  console.log(`events applied            ${report.events.toLocaleString('en-US')}`);
  console.log(`UpdateItem calls          ${report.updateItems.toLocaleString('en-US')}`);
  console.log(`write units consumed      ${report.writeUnits.toLocaleString('en-US')}`);
  console.log(`write units per 1M events ${Math.round(report.writeUnitsPerMillionEvents).toLocaleString('en-US')}`);
  console.log(`USD per 1M events         ${report.dollarsPerMillionEvents.toFixed(4)} (at $${price} per million write units)`);
}
