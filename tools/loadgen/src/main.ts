// Load generator: npm run loadgen -- --rate 5000 --duration 30 --via http|client|both --seed 1
// Sends deterministic shop traffic to a collector (HTTP, ingest keys per store) or through libs/client (Redis),
// or, with --fleet, starts a whole local fleet, sends to it and checks every DynamoDB count exactly afterwards.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SingleBar } from 'cli-progress';
import { compileRules, defaultRules } from '@tally/schema';
import { countRetry, newLoadStats, runLoad } from './driver';
import type { StoreEvents } from './expected';
import { startFleet, type Fleet } from './fleet';
import { generateLoad, type StoreSpec } from './generator';
import { DEMO_STORES, everyBucketRules } from './presets';
import { clientSender, httpSender, type Sender } from './senders';
import { checkCounts } from './verify';

const USAGE = `usage: npm run loadgen -- [options]
  --rate N            events per second (default 1000)
  --duration S        seconds of load (default 30)
  --via http|client|both   path into Tally (default http)
  --seed N            seed of the traffic (default 1)
  --url URL           collector base URL (default http://127.0.0.1:7401)
  --key STORE=KEY     ingest key of a store (repeat per store), or --keys-file FILE ({"STORE":"KEY"})
  --redis-url URL     Redis of the queues, for --via client (default redis://127.0.0.1:6379)
  --stores LIST       STORE:ZONE,… (default KTM1:Asia/Kathmandu,LAX1:America/Los_Angeles,UTC1:UTC)
                      each a tenant of the installation (npm run tenants -- create STORE --time-zone ZONE);
                      --fleet creates them. A store with none is refused (TALLY_ERR_UNKNOWN_STORE).
  --products N --visitors N --batch N --concurrency N
  --duplicates F      share of batches sent twice with the same Idempotency-Key (default 0)
  --bad F             share of batches carrying invalid events (default 0)
  --late F            share of late sessions (default 0.1)
  --fleet             start a local fleet (Redis, dynalite, the four apps) and verify every count afterwards
  --quiet             no progress bar`;

function fail(message: string): never {
  process.stderr.write(`loadgen: ${message}\n${USAGE}\n`);
  process.exit(2);
}

const { values: a } = parseArgs({
  options: {
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '30' },
    via: { type: 'string', default: 'http' },
    seed: { type: 'string', default: '1' },
    url: { type: 'string', default: 'http://127.0.0.1:7401' },
    key: { type: 'string', multiple: true },
    'keys-file': { type: 'string' },
    'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379' },
    stores: { type: 'string' },
    products: { type: 'string', default: '200' },
    visitors: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '8' },
    duplicates: { type: 'string', default: '0' },
    bad: { type: 'string', default: '0' },
    late: { type: 'string', default: '0.1' },
    fleet: { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (a.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const num = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  return n;
};
const rate = num('rate', a.rate, 1);
const duration = num('duration', a.duration, 1);
const seed = num('seed', a.seed, 0);
if (!['http', 'client', 'both'].includes(a.via)) fail(`--via must be http, client or both, got ${a.via}`);
const stores: StoreSpec[] = a.stores
  ? a.stores.split(',').map((s) => {
      const [id, timeZone] = s.split(':');
      if (!id || !timeZone) fail(`--stores entries are STORE:ZONE, got ${JSON.stringify(s)}`);
      return { id, timeZone };
    })
  : [...DEMO_STORES];

let fleet: Fleet | undefined;
const keys = new Map<string, string>();
if (a['keys-file'])
  for (const [s, k] of Object.entries(JSON.parse(readFileSync(a['keys-file'], 'utf8')) as Record<string, string>)) keys.set(s, k);
for (const kv of a.key ?? []) {
  const eq = kv.indexOf('=');
  if (eq < 1) fail(`--key takes STORE=KEY, got a value without "="`);
  keys.set(kv.slice(0, eq), kv.slice(eq + 1));
}
const rulesInput = a.fleet ? everyBucketRules() : defaultRules;
const rules = compileRules(rulesInput);
let url = a.url;
let redisUrl = a['redis-url'];
if (a.fleet) {
  process.stderr.write('loadgen: starting a local fleet (redis-server, dynalite, the four apps)…\n');
  fleet = await startFleet({ stores, rules: rulesInput, replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 } });
  url = fleet.app('collector').url;
  redisUrl = fleet.redis.url;
  for (const s of stores) keys.set(s.id, fleet.keys[s.id]!.ingest);
}
if (a.via !== 'client')
  for (const s of stores) if (!keys.has(s.id)) fail(`no ingest key for store ${s.id}: give --key ${s.id}=<key> or --fleet`);

const stats = newLoadStats();
const onRetry = countRetry(stats);
const senders: { http?: Sender; client?: Sender } = {};
if (a.via !== 'client') senders.http = httpSender({ url, keyOf: (s) => keys.get(s)!, onRetry });
if (a.via !== 'http') senders.client = clientSender({ redisUrl, rules, onRetry, ...fleet?.clientTarget() });

const total = Math.round(rate * duration);
const bar = a.quiet
  ? undefined
  : new SingleBar({
      format:
        'loadgen {bar} {percentage}% | {value}/{total} events | {rate} ev/s | accepted {accepted} | rejected {rejected} | retries {retries}',
      hideCursor: true,
    });
bar?.start(total, 0, { rate: 0, accepted: 0, rejected: 0, retries: 0 });
const started = Date.now();
const accepted: StoreEvents[] = [];
const batchSize = num('batch', a.batch, 1);
await runLoad(
  {
    batches: generateLoad({
      seed,
      stores,
      products: num('products', a.products, 1),
      visitors: num('visitors', a.visitors, 1),
      batchSize: [Math.max(1, Math.floor(batchSize / 2)), Math.ceil(batchSize * 1.5)],
      maxEvents: total,
      now: () => Date.now(),
      badShare: num('bad', a.bad, 0),
      lateShare: num('late', a.late, 0),
    }),
    senders,
    seed,
    rate,
    durationMs: duration * 1_000 * 3,
    concurrency: num('concurrency', a.concurrency, 1),
    duplicateShare: num('duplicates', a.duplicates, 0),
    onAccepted: fleet ? (store, events) => accepted.push({ store, events }) : undefined,
    onProgress: (s) =>
      bar?.update(s.eventsSent, {
        rate: Math.round(s.eventsSent / Math.max(0.001, (Date.now() - started) / 1_000)),
        accepted: s.accepted,
        rejected: s.rejected,
        retries: Object.values(s.retries).reduce((x, y) => x + y, 0),
      }),
  },
  stats,
);
bar?.stop();
const seconds = (Date.now() - started) / 1_000;
await Promise.all(Object.values(senders).map((s) => s.close()));
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
