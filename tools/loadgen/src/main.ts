// Load generator: npm run loadgen -- --rate 5000 --duration 30 --via http|client|both --seed 1
// Sends deterministic shop traffic to a collector (HTTP, ingest keys per store) or through libs/client (Redis),
// or, with --fleet, starts a whole local fleet, sends to it and checks every DynamoDB count exactly afterwards.
import { readFileSync } from 'node:fs';
import { SingleBar } from 'cli-progress';
import { compileRules, defaultRules } from '@tally/schema';
import { parseCli } from './cli';
import { loadFleet, loadTo, type LoadStats } from './driver';
import { startFleet } from './fleet';
import { DEMO_STORES, everyBucketRules } from './presets';
import { checkCounts } from './verify';

const { values: a, fail } = parseCli('loadgen', 'npm run loadgen -- [options]', {
  rate: { default: '1000', min: 1, help: 'events per second' },
  duration: { default: '30', min: 1, arg: 'S', help: 'seconds of load' },
  via: { default: 'http', arg: 'http|client|both', help: 'path into Tally' },
  seed: { default: '1', min: 0, help: 'seed of the traffic' },
  url: { default: 'http://127.0.0.1:7401', arg: 'URL', help: 'collector base URL' },
  key: { multiple: true, arg: 'STORE=KEY', help: 'ingest key of a store (repeat per store), or --keys-file' },
  'keys-file': { arg: 'FILE', help: 'ingest keys as JSON {"STORE":"KEY"}' },
  'redis-url': { default: 'redis://127.0.0.1:6379', arg: 'URL', help: 'Redis of the queues, for --via client' },
  stores: {
    arg: 'LIST',
    help:
      'STORE:ZONE,… (default KTM1:Asia/Kathmandu,LAX1:America/Los_Angeles,UTC1:UTC), each a tenant of the installation\n' +
      `${' '.repeat(25)}(npm run tenants -- create STORE --time-zone ZONE; --fleet creates them; others are refused)`,
  },
  products: { default: '200', min: 1, help: 'distinct products per store' },
  visitors: { default: '1000', min: 1, help: 'distinct visitors per store' },
  batch: { default: '100', min: 1, help: 'events per batch (on average)' },
  concurrency: { default: '8', min: 1, help: 'batches in flight' },
  duplicates: { default: '0', min: 0, arg: 'F', help: 'share of batches sent twice with the same Idempotency-Key' },
  bad: { default: '0', min: 0, arg: 'F', help: 'share of batches carrying invalid events' },
  late: { default: '0.1', min: 0, arg: 'F', help: 'share of late sessions' },
  fleet: { type: 'boolean', help: 'start a local fleet (Redis, dynalite, the four apps) and verify every count afterwards' },
  quiet: { type: 'boolean', help: 'no progress bar' },
});
const { rate, duration, batch } = a;
const via = a.via as 'http' | 'client' | 'both';
if (!['http', 'client', 'both'].includes(via)) fail(`--via must be http, client or both, got ${via}`);
const stores = a.stores
  ? a.stores.split(',').map((s) => {
      const [id, timeZone] = s.split(':');
      return id && timeZone ? { id, timeZone } : fail(`--stores entries are STORE:ZONE, got ${JSON.stringify(s)}`);
    })
  : [...DEMO_STORES];
const keys = new Map<string, string>(Object.entries(a['keys-file'] ? JSON.parse(readFileSync(a['keys-file'], 'utf8')) : {}));
for (const kv of a.key ?? []) {
  const eq = kv.indexOf('=');
  if (eq < 1) fail(`--key takes STORE=KEY, got a value without "="`);
  keys.set(kv.slice(0, eq), kv.slice(eq + 1));
}
if (!a.fleet && via !== 'client')
  for (const s of stores) if (!keys.has(s.id)) fail(`no ingest key for store ${s.id}: give --key ${s.id}=<key> or --fleet`);

let started = 0;
const total = Math.round(rate * duration);
const options = {
  load: {
    seed: a.seed,
    products: a.products,
    visitors: a.visitors,
    batchSize: [Math.max(1, Math.floor(batch / 2)), Math.ceil(batch * 1.5)] as const,
    maxEvents: total,
    badShare: a.bad,
    lateShare: a.late,
  },
  via,
  rate,
  durationMs: duration * 1_000 * 3,
  concurrency: a.concurrency,
  duplicateShare: a.duplicates,
  onProgress: (s: LoadStats) =>
    bar?.update(s.eventsSent, {
      rate: Math.round(s.eventsSent / Math.max(0.001, (Date.now() - started) / 1_000)),
      accepted: s.accepted,
      rejected: s.rejected,
      retries: Object.values(s.retries).reduce((x, y) => x + y, 0),
    }),
};
if (a.fleet) process.stderr.write('loadgen: starting a local fleet (redis-server, dynalite, the four apps)…\n');
const fleet = a.fleet
  ? await startFleet({ stores, rules: everyBucketRules(), replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 } })
  : undefined;
const bar = a.quiet
  ? undefined
  : new SingleBar({
      format:
        'loadgen {bar} {percentage}% | {value}/{total} events | {rate} ev/s | accepted {accepted} | rejected {rejected} | retries {retries}',
      hideCursor: true,
    });
bar?.start(total, 0, { rate: 0, accepted: 0, rejected: 0, retries: 0 });
started = Date.now();
const { accepted, done } = fleet
  ? loadFleet(fleet, options)
  : loadTo(
      {
        stores,
        http: { url: a.url, keyOf: (s) => keys.get(s)! },
        client: { redisUrl: a['redis-url'], rules: compileRules(defaultRules) },
      },
      { ...options, keepAccepted: false },
    );
const stats = await done;
bar?.stop();
const seconds = (Date.now() - started) / 1_000;
process.stdout.write(
  `loadgen: sent ${stats.eventsSent} events in ${stats.batches} batches in ${seconds.toFixed(1)} s (${Math.round(stats.eventsSent / seconds)} ev/s; ` +
    `http ${stats.byVia.http}, client ${stats.byVia.client} batches), accepted ${stats.accepted}, rejected ${stats.rejected}, ` +
    `duplicates ${stats.duplicatesSent}, retries ${JSON.stringify(stats.retries)}, gave up ${stats.gaveUp}\n`,
);
for (const m of stats.edgeMismatches.slice(0, 10)) process.stdout.write(`loadgen: edge mismatch: ${m}\n`);
let exit = stats.edgeMismatches.length > 0 || stats.gaveUp > 0 ? 1 : 0;
if (fleet) {
  try {
    process.stderr.write('loadgen: waiting until every count is written…\n');
    const check = await checkCounts(fleet, accepted);
    process.stdout.write(
      `loadgen: table has ${check.scanned.items} counter items, ${check.cells} cells compared, mismatches ${check.mismatches}\n`,
    );
    for (const s of check.samples) process.stdout.write(`loadgen:   ${s}\n`);
    if (check.mismatches > 0) exit = 1;
  } finally {
    await fleet.stop();
  }
}
process.exit(exit);
