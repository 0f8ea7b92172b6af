// npx tsx tools/bench/src/profile-ingest.ts [seconds] [batch]: CPU profiles (node --cpu-prof) of the collector and
// the bucket-aggregator under ingest-e2e's load (one of each, 1000-event batches by default), and where each ms of
// CPU per 1,000 events goes, by stage; then redis-server's CPU per 1,000 events of each Redis step of a job, alone
// on a fresh redis-server (the fleet's commandstats lump every script under evalsha). Profiles are written to
// test-output/profiles (not committed).
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BucketStore } from '@tally/buckets';
import { generateLoad, startFleet } from '@tally/loadgen';
import { QUEUE } from '@tally/queues';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, rollupDistinct, validateEvents } from '@tally/schema';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { REPO_ROOT, sleep, startRedis, waitForQueuesIdle } from '@tally/testing';
import { profileStages } from './cpu-profile';
import { appMetric, CATALOGUE, startBackgroundLoad, STORES } from './load';
import { cpuMeter, cpuSeconds } from './proc';

const seconds = Number(process.argv[2] ?? 20);
const batch = Number(process.argv[3] ?? 1000) as 100 | 1000;
const dir = join(REPO_ROOT, 'test-output', 'profiles');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const prof = (app: string) => ({ NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${join(dir, app)}` });

const fleet = await startFleet({
  stores: STORES,
  rules: defaultRules,
  bucketSeconds: 900,
  appendfsync: 'everysec',
  replicas: { 'query-api': 0, 'dynamo-writer': 0 },
  appEnv: {
    collector: { MAX_QUEUE_DEPTH: '100', INGEST_BUDGET_EVENTS_PER_SECOND: '0', ...prof('collector') },
    'bucket-aggregator': prof('bucket-aggregator'),
  },
});
let cpu: Record<string, { cores: number; seconds: number }>;
let events: number;
let commandStats = '';
try {
  const load = startBackgroundLoad(fleet, { seed: 100, concurrency: batch === 1000 ? 8 : 32, batchSize: batch });
  await sleep(3_000);
  await fleet.inspect.config('RESETSTAT');
  const a0 = await appMetric(fleet, 'bucket-aggregator', 'tally_events_applied_total');
  const meter = cpuMeter({
    collector: fleet.app('collector').handle.process.pid,
    aggregator: fleet.app('bucket-aggregator').handle.process.pid,
    redis: fleet.redis.pid,
  });
  await sleep(seconds * 1000);
  cpu = meter.stop();
  events = (await appMetric(fleet, 'bucket-aggregator', 'tally_events_applied_total')) - a0;
  commandStats = await fleet.inspect.info('commandstats');
  await load.stop();
  await waitForQueuesIdle([fleet.queues[QUEUE.events]], { timeoutMs: 120_000, intervalMs: 100 });
} finally {
  await fleet.stop();
}
process.stdout.write(`${events} events applied in ${seconds} s (${Math.round(events / seconds)} events/s); CPU ms per 1000 events:\n`);
for (const [k, v] of Object.entries(cpu)) process.stdout.write(`  ${k}: ${((v.seconds * 1e6) / events).toFixed(2)}\n`);
process.stdout.write('redis commands (usec per 1000 events; commands run inside scripts counted under their own name too):\n');
for (const m of commandStats.matchAll(/cmdstat_(\w+):calls=(\d+),usec=(\d+)/g)) {
  if ((Number(m[3]) * 1000) / events > 20)
    process.stdout.write(`  ${m[1]}: ${m[2]} calls, ${((Number(m[3]) * 1000) / events / 1000).toFixed(2)} ms\n`);
}
for (const app of ['collector', 'bucket-aggregator']) {
  const files = readdirSync(join(dir, app)).filter((f) => f.endsWith('.cpuprofile'));
  for (const f of files) {
    const { totalMs, stages, leaves } = profileStages(join(dir, app, f));
    process.stdout.write(`\n${app} (${f}): ${Math.round(totalMs)} ms of CPU in the profile (whole life, start-up included)\n`);
    if (process.env['LEAVES'])
      for (const [l, v] of [...leaves].sort((a, b) => b[1] - a[1]).slice(0, 40)) process.stdout.write(`    ${Math.round(v)} ms ${l}\n`);
    for (const s of stages.slice(0, 25))
      process.stdout.write(`  ${s.stage.padEnd(44)} ${((s.ms / totalMs) * 100).toFixed(1).padStart(5)}%  ${Math.round(s.ms)} ms\n`);
  }
}

// Each Redis step of a job alone, over 100 rolled-up 1000-event batches of the same traffic (AOF everysec).
const rules = compileRules(defaultRules);
const now = Date.now();
const lim = { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 };
const jobs = [...generateLoad({ seed: 1, stores: STORES, ...CATALOGUE, batchSize: 1000, maxEvents: 100_000, now })].map((b) => {
  const evs = validateEvents(rules, b.events, lim).events;
  const tz = STORES.find((s) => s.id === b.store)!.timeZone;
  return {
    store: b.store,
    rows: flattenRows(rollup(rules, b.store, tz, evs)),
    distinct: flattenDistinct(rollupDistinct(rules, b.store, tz, evs)),
    n: evs.length,
  };
});
const total = jobs.reduce((a, j) => a + j.n, 0);
const server = await startRedis({ appendonly: true, appendfsync: 'everysec' });
const redis = new Redis(server.url, { maxRetriesPerRequest: null });
const buckets = new BucketStore({ redis, rules, prefix: 'p' });
const queue = new Queue('events', { connection: redis, prefix: 'pq', defaultJobOptions: { removeOnComplete: true } });
const step = async (name: string, run: () => Promise<unknown>) => {
  const [r0, n0] = [cpuSeconds(server.pid), process.cpuUsage()];
  await run();
  const n = process.cpuUsage(n0);
  const ms = (s: number) => ((s * 1e6) / total).toFixed(2);
  process.stdout.write(`  ${name.padEnd(34)} redis ${ms(cpuSeconds(server.pid) - r0)} ms, caller ${ms((n.user + n.system) / 1e6)} ms\n`);
};
process.stdout.write(`\nredis-server CPU per 1000 events of each step of a job, alone (${jobs.length} jobs), and the calling process's:\n`);
await step('BullMQ add (addJob)', async () => {
  for (const [i, j] of jobs.entries())
    await queue.add('events', { batchId: `b${i}`, store: j.store, rows: j.rows, distinct: j.distinct, count: j.n }, { jobId: `b${i}` });
});
await step('BullMQ take and complete (no-op job)', async () => {
  let left = jobs.length;
  await new Promise<void>((resolve) => {
    const w = new Worker('events', async () => void (--left === 0 && setTimeout(() => void w.close().then(resolve), 50)), {
      connection: redis.duplicate(),
      prefix: 'pq',
      concurrency: 4,
    });
  });
});
await step('SKETCH_ADD (distinct members)', async () => {
  for (const j of jobs) await buckets.sketches.add(j.store, j.distinct);
});
await step('APPLY (counts and rankings)', async () => {
  for (const [i, j] of jobs.entries()) await buckets.applyRows(j.store, `b${i}`, j.rows, { now, dedupeTtlSeconds: 3600 });
});
await step('REGISTER (work set)', async () => {
  for (const j of jobs) await buckets.registerStore(j.store, 0);
});
redis.disconnect();
await server.stop();
process.exit(0);
