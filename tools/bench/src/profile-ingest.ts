// npx tsx tools/bench/src/profile-ingest.ts [seconds] [batch]: CPU profiles (node --cpu-prof) of the collector and
// the bucket-aggregator under ingest-e2e's load (one of each, 1000-event batches by default), and where each ms of
// CPU per 1,000 events goes, by stage. Profiles are written to test-output/profiles (not committed).
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startFleet } from '@tally/loadgen';
import { QUEUE } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import { REPO_ROOT, sleep, waitForQueuesIdle } from '@tally/testing';
import { profileStages } from './cpu-profile';
import { appMetric, startBackgroundLoad, STORES } from './load';
import { cpuMeter } from './proc';

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
