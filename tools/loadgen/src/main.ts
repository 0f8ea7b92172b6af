// npm run loadgen (and npm run test:soak, as --soak): deterministic shop traffic to a collector or through libs/client,
// or to a local fleet it starts (--fleet, --soak) whose every count it checks afterwards. README.md says more.
import { SingleBar } from 'cli-progress';
import { runningStack } from '@tally/stack';
import { checkCollectorUrl, clientTarget, loadTarget, parseCli, parseStores, readKeysFile, stackDemoStore } from './cli';
import { loadFleet, loadTo, type LoadStats } from './driver';
import { everyBucketRules, startFleet } from './fleet';
import { DEMO_STORES } from './generator';
import { shortestSoakSeconds, soakRun, soakWarmup, SOAK_OPTIONS } from './soak';
import { checkFleetCounts, waitForDrain } from './verify';

// A soak run has defaults of its own, which its --help shows.
const soak = process.argv.includes('--soak');
const command = soak ? 'soak' : 'loadgen';
const { values: a, ...cli } = parseCli(command, `npm run ${soak ? 'test:soak' : 'loadgen'} -- [options]`, {
  rate: { default: soak ? '300' : '1000', min: 1, help: 'events per second' },
  duration: { default: soak ? '600' : '30', min: 1, arg: 'S', help: 'seconds of load' },
  minutes: { min: 0.5, help: 'minutes of load, instead of --duration' },
  via: { default: soak ? 'both' : 'http', arg: 'http|client|both', help: 'path into Tally' },
  seed: {
    min: 0,
    integer: true,
    help: 'seed of the traffic: the same seed sends the same batches with the same Idempotency-Keys\n(default 1 with --fleet or --soak, else a new one each run, printed)',
  },
  url: { arg: 'URL', help: "collector base URL (default the running npm start stack's collector, else http://127.0.0.1:7401)" },
  key: { multiple: true, arg: 'STORE=KEY', help: 'ingest key of a store (repeat per store), or --keys-file' },
  'keys-file': { arg: 'FILE', help: 'ingest keys as JSON {"STORE":"KEY"}' },
  'redis-url': {
    arg: 'URL',
    help:
      'Redis of the queues, for --via client or both (default REDIS_CLUSTER_NODES, REDIS_SENTINELS or REDIS_URL, else the\n' +
      "running npm start stack's Redis, Cluster or Sentinels, else redis://127.0.0.1:6379); KEY_PREFIX and QUEUE_SHARDS from\n" +
      "the environment, else (on the stack's Redis) as its apps have them",
  },
  stores: {
    arg: 'LIST',
    help:
      "STORE:ZONE,… (default: the running npm start stack's demo store with its saved key, when there is one; else, and\n" +
      'always with --fleet or --soak, KTM1:Asia/Kathmandu,LAX1:America/Los_Angeles,UTC1:UTC), each a tenant of the\n' +
      'installation (npm run tenants -- create STORE --time-zone ZONE; --fleet creates them; others are refused)',
  },
  products: { default: '200', min: 1, integer: true, help: 'distinct products per store' },
  visitors: { default: '1000', min: 1, integer: true, help: 'distinct visitors per store' },
  batch: { default: soak ? '20-150' : '100', arg: 'N|MIN-MAX', help: 'events per batch: N on average (N/2 to 3N/2), or MIN to MAX' },
  concurrency: { default: soak ? '4' : '8', min: 1, integer: true, help: 'batches in flight' },
  duplicates: { default: soak ? '0.05' : '0', min: 0, arg: 'F', help: 'share of batches sent twice with the same Idempotency-Key' },
  bad: { default: soak ? '0.01' : '0', min: 0, arg: 'F', help: 'share of batches carrying invalid events' },
  late: { default: '0.1', min: 0, arg: 'F', help: 'share of late sessions' },
  fleet: { type: 'boolean', help: 'start a local fleet (Redis, dynalite, the four apps) and verify every count afterwards' },
  quiet: { type: 'boolean', help: 'no progress bar' },
  soak: { type: 'boolean', help: 'a soak run on a fleet (npm run test:soak): memory and flush lag sampled and bounded' },
  ...SOAK_OPTIONS,
});
const { fail, checked } = cli;
const via = a.via as 'http' | 'client' | 'both';
if (!['http', 'client', 'both'].includes(via)) fail(`--via must be http, client or both, got ${via}`);
const [lo, hi] = a.batch.split('-').map(Number) as [number, number?];
const batchSize = [hi === undefined ? Math.max(1, Math.floor(lo / 2)) : lo, hi ?? Math.ceil(lo * 1.5)] as const;
if (!(Number.isSafeInteger(lo) && (hi === undefined || Number.isSafeInteger(hi)) && batchSize[0] >= 1 && batchSize[1] >= batchSize[0]))
  fail(`--batch takes N or MIN-MAX, whole numbers of at least 1, got ${a.batch}`);
// Every option is checked before anything starts.
const stores = a.stores === undefined ? [...DEMO_STORES] : checked(() => parseStores(a.stores!));
const keys = a['keys-file'] === undefined ? new Map<string, string>() : checked(() => readKeysFile(a['keys-file']!));
const givenUrl = a.url === undefined ? undefined : checked(() => checkCollectorUrl(a.url!));
const seconds = a.minutes === undefined ? a.duration : a.minutes * 60;
// A soak run too short for its warm-up and the samples judged after it could only FAIL: refused before it starts.
const shortest = soak ? shortestSoakSeconds(a) : 0;
if (seconds < shortest)
  fail(
    `a soak run of ${seconds} s is too short: after its ${soakWarmup(a, shortest)} s warm-up the judges need 3 samples, ` +
      `--sample-seconds ${a['sample-seconds']} apart; the shortest run is ${shortest} s ` +
      `(--duration ${shortest} or --minutes ${Math.ceil((shortest / 60) * 100) / 100})`,
  );
for (const kv of a.key ?? []) {
  const eq = kv.indexOf('=');
  if (eq < 1) fail(`--key takes STORE=KEY, got a value without "="`);
  keys.set(kv.slice(0, eq), kv.slice(eq + 1));
}
const useFleet = a.fleet || soak;
const note = (line: string) => process.stderr.write(`${command}: ${line}\n`);
const say = (line: string) => process.stdout.write(`${command}: ${line}\n`);
// No stores or keys given: the running npm start stack's demo store, with the ingest key that stack saved.
const demo = useFleet || a.stores !== undefined || keys.size > 0 ? undefined : stackDemoStore(process.env);
if (demo) {
  stores.splice(0, stores.length, { id: demo.store, timeZone: 'UTC' });
  keys.set(demo.store, demo.ingestKey);
  note(`sending to the demo store ${demo.store} (its ingest key from ${demo.file}); --stores and --key for others`);
}
if (!useFleet && via !== 'client') for (const s of stores) if (!keys.has(s.id)) fail(noKey(s.id));
/** Why a store has no key: none given, or (no store given either) no stack's demo store where loadgen looked. */
function noKey(store: string) {
  if (a.stores !== undefined || keys.size > 0) return `no ingest key for store ${store}: give --key ${store}=<key> or --fleet`;
  const { pid, dataDir } = runningStack(process.env);
  const why =
    pid === undefined
      ? `found no running npm start stack in ${dataDir} (one started with TALLY_DATA_DIR: run loadgen with the same)`
      : `the npm start stack in ${dataDir} has no demo store`;
  return `no store given and ${why}: give --stores STORE:ZONE and --key STORE=<key>, or --fleet`;
}
// Against a running installation a seed sent again is refused (its Idempotency-Keys were used for other events).
const seed = a.seed ?? (useFleet ? 1 : Date.now() % 1_000_000);
// Without --fleet: said on stderr as npm run dlq does; a stack whose run file does not say is a usage error.
const collector = useFleet || via === 'client' ? undefined : checked(() => loadTarget('collector', givenUrl, process.env));
if (collector) note(`using collector ${collector[0]} (${collector[1]})`);
const queuesAt = useFleet || via === 'http' ? undefined : checked(() => clientTarget(a['redis-url'], process.env));
if (queuesAt) note(`using ${queuesAt.said}`);
if (a.seed === undefined && !useFleet) note(`seed ${seed} (--seed ${seed} sends these batches again)`);

let started = 0;
const format =
  'loadgen {bar} {percentage}% | {value}/{total} events | {rate} ev/s | accepted {accepted} | rejected {rejected} | retries {retries}';
const bar = a.quiet || soak ? undefined : new SingleBar({ format, hideCursor: true });
const total = Math.round(a.rate * seconds);
const options = {
  load: { seed, products: a.products, visitors: a.visitors, batchSize, maxEvents: total, badShare: a.bad, lateShare: a.late },
  via,
  rate: a.rate,
  durationMs: seconds * 1_000 * 3,
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
if (useFleet) note('starting a local fleet (redis-server, dynalite, the four apps)…');
const fleet = useFleet
  ? await startFleet({
      stores,
      rules: everyBucketRules(),
      ...(soak
        ? { env: { DEDUPE_WINDOW_SECONDS: String(a['dedupe-window']) } }
        : { replicas: { 'bucket-aggregator': 2, 'dynamo-writer': 2 } }),
      // The collector takes the largest batch --batch makes (its default limit is 1,000 events a request).
      appEnv: { collector: { MAX_EVENTS_PER_REQUEST: String(Math.max(1_000, batchSize[1])) } },
    })
  : undefined;
let exit = 1;
try {
  if (fleet) say(`fleet up (${fleet.apps.map((x) => x.name).join(', ')}); ${a.rate} events/s for ${seconds} s`);
  bar?.start(total, 0, { rate: 0, accepted: 0, rejected: 0, retries: 0 });
  started = Date.now();
  const { stats, accepted, done } = fleet
    ? loadFleet(fleet, options)
    : loadTo(
        {
          stores,
          http: { url: collector?.[0] ?? '', keyOf: (s) => keys.get(s)! },
          client: queuesAt?.options ?? { connection: 'redis://127.0.0.1:6379' }, // the default rules (unused with --via http)
        },
        { ...options, keepAccepted: false },
      );
  const [, soakOk] = await Promise.all([done, soak ? soakRun(fleet!, done, stats, a, seconds, say) : true]);
  bar?.stop();
  const took = (Date.now() - started) / 1_000;
  say(
    `sent ${stats.eventsSent} events in ${stats.batches} batches in ${took.toFixed(1)} s (${Math.round(stats.eventsSent / took)} ev/s; ` +
      `http ${stats.byVia.http}, client ${stats.byVia.client} batches), accepted ${stats.accepted}, rejected ${stats.rejected}, ` +
      `duplicates ${stats.duplicatesSent}, retries ${JSON.stringify(stats.retries)}, gave up ${stats.gaveUp}`,
  );
  if (!stats.stoppedBy && stats.eventsSent / took < 0.9 * a.rate)
    say(
      `sent ${Math.round(stats.eventsSent / took)} events/s, below the --rate ${a.rate} asked: the installation's answers (or --concurrency ${a.concurrency}) set the pace`,
    );
  for (const m of stats.edgeMismatches.slice(0, 10)) say(`edge mismatch: ${m}`);
  if (stats.stoppedBy)
    say(`stopped early: ${stats.stoppedBy} (--batch ${a.batch} sends up to ${batchSize[1]} events a batch; give a smaller --batch)`);
  let ok = soakOk && stats.edgeMismatches.length === 0 && stats.gaveUp === 0 && !stats.stoppedBy;
  if (fleet) {
    note('waiting until every count is written…');
    await waitForDrain(fleet, { timeoutMs: 300_000 });
    const check = await checkFleetCounts(fleet, accepted);
    for (const line of check.lines) say(line);
    if (!check.ok) ok = false;
  }
  if (soak) say(ok ? 'PASS' : 'FAIL');
  exit = ok ? 0 : 1;
} finally {
  await fleet?.stop();
}
process.exit(exit);
