// Soak: npm run test:soak -- --minutes 10 [--rate 300] — steady load through a whole local fleet, every process's
// RSS, Redis used_memory and the flush lag sampled; exits non-zero when memory keeps growing, the lag is unbounded
// or a count is off.
import { readFileSync } from 'node:fs';
import { checkCounts, DEMO_STORES, everyBucketRules, loadFleet, parseCli, startFleet } from '@tally/loadgen';
import { QUEUE } from '@tally/queues';
import { metricValue, sleep } from '@tally/testing';
import { formatGrowth, judgeBound, judgeGrowth, type Series } from './analysis';

const { values: o } = parseCli('soak', 'npm run test:soak -- [options]', {
  minutes: { default: '10', min: 0.5, help: 'minutes of load' },
  rate: { default: '300', min: 1, help: 'events per second' },
  'sample-seconds': { default: '5', min: 1, help: 'seconds between two samples' },
  'warmup-seconds': {
    min: 0,
    help: 'samples before this are not judged (default a fifth of the run, at least the dedupe window + 15, at most 180)',
  },
  'max-rss-growth': {
    default: '0.15',
    min: 0,
    arg: 'F',
    help: "allowed growth of a process's RSS, the last third's mean over the first third's",
  },
  'max-rss-growth-mb': { default: '15', min: 0, arg: 'MB', help: '…or in MB, whichever is larger' },
  'max-redis-growth': { default: '0.25', min: 0, arg: 'F', help: 'the same for Redis used_memory' },
  'max-redis-growth-mb': { default: '5', min: 0, arg: 'MB', help: '…or in MB, whichever is larger' },
  'max-flush-lag': { default: '30', min: 0, arg: 'S', help: 'bound of tally_flush_lag_seconds after the warm-up' },
  'dedupe-window': { default: '60', min: 60, arg: 'S', help: 'DEDUPE_WINDOW_SECONDS of the apps: Redis levels off after it' },
  seed: { default: '1', min: 0, help: 'seed of the traffic' },
});
const { minutes, rate, 'sample-seconds': sampleSeconds, 'max-flush-lag': maxFlushLag } = o;
// Until the dedupe window is full, batch ids pile up by design.
const warmup = o['warmup-seconds'] ?? Math.min(180, Math.max(o['dedupe-window'] + 15, minutes * 12));
const say = (line: string) => process.stdout.write(`soak: ${line}\n`);

/** VmRSS of a process in MB (Linux /proc), undefined when it is gone. */
function rssMb(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

// Steady load through a whole fleet, sampling every process's RSS, Redis used_memory and the aggregator's flush lag
// every sample; then bounded growth and lag are judged, and every count checked.
const f = await startFleet({ stores: DEMO_STORES, rules: everyBucketRules(), env: { DEDUPE_WINDOW_SECONDS: String(o['dedupe-window']) } });
let ok = false;
try {
  say(
    `fleet up (${f.apps.map((a) => a.name).join(', ')}); ${rate} events/s for ${minutes} min, a sample every ${sampleSeconds} s, warm-up ${warmup} s`,
  );
  const started = Date.now();
  const { stats, accepted, done } = loadFleet(f, {
    load: { seed: o.seed, maxEvents: Math.round(rate * minutes * 60), batchSize: [20, 150], badShare: 0.01 },
    rate,
    concurrency: 4,
    duplicateShare: 0.05,
  });
  let loadDone = false;
  void done.finally(() => (loadDone = true));

  const series = new Map<string, Series>();
  const push = (name: string, unit: Series['unit'], t: number, v: number | undefined) => {
    if (v === undefined || !Number.isFinite(v)) return;
    const s = series.get(name) ?? series.set(name, { name, unit, samples: [] }).get(name)!;
    s.samples.push([t, v]);
  };
  const last = (name: string) => series.get(name)?.samples.at(-1)?.[1];
  const lag: Series = { name: 'tally_flush_lag_seconds', unit: 's', samples: [] };
  while (!loadDone) {
    await Promise.race([sleep(sampleSeconds * 1_000), done]);
    const t = (Date.now() - started) / 1_000;
    for (const app of f.apps) push(`${app.name} rss`, 'MB', t, rssMb(app.handle.process.pid));
    push('redis-server rss', 'MB', t, rssMb(f.redis.pid));
    const dynalite = f
      .pids()
      .filter((p) => p.what.startsWith('dynalite'))
      .at(-1);
    if (dynalite) push('dynalite rss', 'MB', t, rssMb(dynalite.pid));
    push('redis used_memory', 'MB', t, Number(/^used_memory:(\d+)/m.exec(await f.inspect.info('memory'))?.[1]) / 1_048_576);
    for (const app of f.apps) {
      const text = await app.handle.metrics().catch(() => '');
      if (text) push(`${app.name} heap used`, 'MB', t, metricValue(text, 'tally_nodejs_heap_size_used_bytes') / 1_048_576);
      if (text && app === f.app('bucket-aggregator')) lag.samples.push([t, metricValue(text, 'tally_flush_lag_seconds')]);
    }
    push('events jobs kept', 'jobs', t, await f.queues[QUEUE.events].getCompletedCount());
    const waiting = await f.queues[QUEUE.events].getWaitingCount();
    say(
      `${t.toFixed(0).padStart(5)} s sent ${stats.eventsSent}, accepted ${stats.accepted}; rss ${f.apps.map((a) => `${a.name} ${rssMb(a.handle.process.pid)?.toFixed(0)}`).join(', ')} MB; ` +
        `redis used ${last('redis used_memory')?.toFixed(1)} MB (events jobs kept ${last('events jobs kept')}, waiting ${waiting}); flush lag ${lag.samples.at(-1)?.[1].toFixed(1)} s`,
    );
  }
  await done;
  const seconds = (Date.now() - started) / 1_000;
  say(
    `load done: ${stats.eventsSent} events in ${seconds.toFixed(0)} s (${Math.round(stats.eventsSent / seconds)}/s), accepted ${stats.accepted}, rejected ${stats.rejected}, retries ${JSON.stringify(stats.retries)}`,
  );

  // Judged: every process's RSS and Redis used_memory. Shown only: V8 heap used (saw-toothed by GC) and the
  // completed events jobs BullMQ keeps (QUEUE_SETTINGS removeOnComplete), which explain most of Redis's growth.
  say(`memory after the ${warmup} s warm-up, mean of the first third vs the last third:`);
  const growth = [];
  for (const s of series.values()) {
    const redis = s.name === 'redis used_memory';
    if (!redis && !s.name.endsWith(' rss')) continue;
    growth.push(
      judgeGrowth(
        s,
        warmup,
        redis
          ? { maxRelative: o['max-redis-growth'], maxAbsolute: o['max-redis-growth-mb'] }
          : { maxRelative: o['max-rss-growth'], maxAbsolute: o['max-rss-growth-mb'] },
      ),
    );
    say(`  ${formatGrowth(growth.at(-1)!)}`);
  }
  for (const s of series.values())
    if (!s.name.endsWith(' rss') && s.name !== 'redis used_memory')
      say(`  ${formatGrowth(judgeGrowth(s, warmup, { maxRelative: Infinity, maxAbsolute: Infinity })).replace(/^ok  /, 'info')}`);
  const [redisMem, kept] = [series.get('redis used_memory')?.samples, series.get('events jobs kept')?.samples];
  if (redisMem && kept && kept.length > 2) {
    const dm = redisMem.at(-1)![1] - redisMem[0]![1];
    const dj = kept.at(-1)![1] - kept[0]![1];
    if (dj > 0)
      say(
        `  redis used_memory grew ${dm.toFixed(1)} MB while BullMQ kept ${dj} more completed events jobs (~${((dm * 1024) / dj).toFixed(1)} KB each, payload included)`,
      );
  }
  const flushLag = judgeBound(lag, warmup, maxFlushLag);
  say(
    `  ${flushLag.ok ? 'ok  ' : 'FAIL'} ${'flush lag'.padEnd(28)} max ${flushLag.max.toFixed(1)} s, mean ${flushLag.mean.toFixed(2)} s (bound ${maxFlushLag} s), ${flushLag.n} samples`,
  );

  const check = await checkCounts(f, accepted);
  say(`every count written: ${check.scanned.items} items, ${check.cells} cells, mismatches ${check.mismatches}`);
  for (const s of check.samples) say(`  ${s}`);
  ok = growth.every((g) => g.ok) && flushLag.ok && check.mismatches === 0 && stats.edgeMismatches.length === 0 && stats.gaveUp === 0;
  say(ok ? 'PASS' : 'FAIL');
} finally {
  await f.stop();
}
process.exit(ok ? 0 : 1);
