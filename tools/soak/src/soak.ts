import { readFileSync } from 'node:fs';
import { checkCounts, DEMO_STORES, everyBucketRules, loadFleet, startFleet, type Fleet, type LoadStats } from '@tally/loadgen';
import { QUEUE } from '@tally/queues';
import { metricValue, sleep } from '@tally/testing';
import { formatGrowth, judgeBound, judgeGrowth, type Growth, type Series } from './analysis';

export interface SoakOptions {
  minutes: number;
  /** Events per second. */
  rate: number;
  sampleSeconds: number;
  /** Samples before this are not judged (caches filling, JIT, the dedupe window filling). */
  warmupSeconds: number;
  /** Allowed growth of a process's RSS (last third's mean over the first third's): relative, or absolute MB. */
  maxRssGrowth: number;
  maxRssGrowthMb: number;
  /** The same for Redis used_memory. */
  maxRedisGrowth: number;
  maxRedisGrowthMb: number;
  /** tally_flush_lag_seconds must stay at or under this after the warm-up. */
  maxFlushLagSeconds: number;
  /** DEDUPE_WINDOW_SECONDS of the apps: batch ids are kept this long, so Redis levels off after it. */
  dedupeWindowSeconds: number;
  seed: number;
  log: (line: string) => void;
}

export interface SoakResult {
  ok: boolean;
  stats: LoadStats;
  growth: Growth[];
  flushLag: ReturnType<typeof judgeBound>;
  mismatches: number;
  lines: string[];
}

/** VmRSS of a process in MB (Linux /proc), undefined when it is gone. */
function rssMb(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Steady load through a whole fleet for `minutes`, sampling every process's RSS, Redis used_memory and the
 * aggregator's flush lag every `sampleSeconds`; then judges bounded growth and lag, and checks every count.
 */
export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    o.log(line);
  };
  let fleet: Fleet | undefined;
  try {
    fleet = await startFleet({
      stores: DEMO_STORES,
      rules: everyBucketRules(),
      env: { DEDUPE_WINDOW_SECONDS: String(o.dedupeWindowSeconds) },
    });
    const f = fleet;
    say(
      `soak: fleet up (${f.apps.map((a) => a.name).join(', ')}); ${o.rate} events/s for ${o.minutes} min, a sample every ${o.sampleSeconds} s, warm-up ${o.warmupSeconds} s`,
    );
    const started = Date.now();
    const {
      stats,
      accepted,
      done: load,
    } = loadFleet(f, {
      load: { seed: o.seed, maxEvents: Math.round(o.rate * o.minutes * 60), batchSize: [20, 150], badShare: 0.01 },
      rate: o.rate,
      concurrency: 4,
      duplicateShare: 0.05,
    });
    let loadDone = false;
    void load.finally(() => {
      loadDone = true;
    });

    const series = new Map<string, Series>();
    const push = (name: string, unit: Series['unit'], t: number, v: number | undefined) => {
      if (v === undefined || !Number.isFinite(v)) return;
      let s = series.get(name);
      if (!s) series.set(name, (s = { name, unit, samples: [] }));
      s.samples.push([t, v]);
    };
    const lag: Series = { name: 'tally_flush_lag_seconds', unit: 's', samples: [] };
    const aggregator = f.app('bucket-aggregator');
    while (!loadDone) {
      await Promise.race([sleep(o.sampleSeconds * 1_000), load]);
      const t = (Date.now() - started) / 1_000;
      for (const app of f.apps) push(`${app.name} rss`, 'MB', t, rssMb(app.handle.process.pid));
      push('redis-server rss', 'MB', t, rssMb(f.redis.pid));
      const dyn = f
        .pids()
        .filter((p) => p.what.startsWith('dynalite'))
        .at(-1);
      if (dyn) push('dynalite rss', 'MB', t, rssMb(dyn.pid));
      const info = await f.inspect.info('memory');
      push('redis used_memory', 'MB', t, Number(/^used_memory:(\d+)/m.exec(info)?.[1]) / 1_048_576);
      for (const app of f.apps) {
        const text = await app.handle.metrics().catch(() => '');
        if (text) push(`${app.name} heap used`, 'MB', t, metricValue(text, 'tally_nodejs_heap_size_used_bytes') / 1_048_576);
        if (text && app === aggregator) lag.samples.push([t, metricValue(text, 'tally_flush_lag_seconds')]);
      }
      push('events jobs kept', 'jobs', t, await f.queues[QUEUE.events].getCompletedCount());
      const waiting = await f.queues[QUEUE.events].getWaitingCount();
      const completed = series.get('events jobs kept')?.samples.at(-1)?.[1];
      say(
        `soak: ${t.toFixed(0).padStart(5)} s sent ${stats.eventsSent}, accepted ${stats.accepted}; rss ${f.apps.map((a) => `${a.name} ${rssMb(a.handle.process.pid)?.toFixed(0)}`).join(', ')} MB; ` +
          `redis used ${series.get('redis used_memory')?.samples.at(-1)?.[1].toFixed(1)} MB (events jobs kept ${completed}, waiting ${waiting}); flush lag ${lag.samples.at(-1)?.[1].toFixed(1)} s`,
      );
    }
    await load;
    const seconds = (Date.now() - started) / 1_000;
    say(
      `soak: load done: ${stats.eventsSent} events in ${seconds.toFixed(0)} s (${Math.round(stats.eventsSent / seconds)}/s), accepted ${stats.accepted}, rejected ${stats.rejected}, retries ${JSON.stringify(stats.retries)}`,
    );

    // Judged: every process's RSS and Redis used_memory. Shown only: V8 heap used (saw-toothed by GC) and the
    // completed events jobs BullMQ keeps (QUEUE_SETTINGS removeOnComplete), which explain most of Redis's growth.
    const judged = [...series.values()].filter((s) => s.name.endsWith(' rss') || s.name === 'redis used_memory');
    const shown = [...series.values()].filter((s) => !judged.includes(s));
    const growth = judged.map((s) =>
      judgeGrowth(
        s,
        o.warmupSeconds,
        s.name.startsWith('redis used')
          ? { maxRelative: o.maxRedisGrowth, maxAbsolute: o.maxRedisGrowthMb }
          : { maxRelative: o.maxRssGrowth, maxAbsolute: o.maxRssGrowthMb },
      ),
    );
    const flushLag = judgeBound(lag, o.warmupSeconds, o.maxFlushLagSeconds);
    say(`soak: memory after the ${o.warmupSeconds} s warm-up, mean of the first third vs the last third:`);
    for (const g of growth) say(`soak:   ${formatGrowth(g)}`);
    for (const s of shown)
      say(
        `soak:   ${formatGrowth(judgeGrowth(s, o.warmupSeconds, { maxRelative: Infinity, maxAbsolute: Infinity })).replace(/^ok  /, 'info')}`,
      );
    const redisMem = series.get('redis used_memory');
    const kept = series.get('events jobs kept');
    if (redisMem && kept && kept.samples.length > 2) {
      const dm = redisMem.samples.at(-1)![1] - redisMem.samples[0]![1];
      const dj = kept.samples.at(-1)![1] - kept.samples[0]![1];
      if (dj > 0)
        say(
          `soak:   redis used_memory grew ${dm.toFixed(1)} MB while BullMQ kept ${dj} more completed events jobs (~${((dm * 1024) / dj).toFixed(1)} KB each, payload included)`,
        );
    }
    say(
      `soak:   ${flushLag.ok ? 'ok  ' : 'FAIL'} ${'flush lag'.padEnd(28)} max ${flushLag.max.toFixed(1)} s, mean ${flushLag.mean.toFixed(2)} s (bound ${o.maxFlushLagSeconds} s), ${flushLag.n} samples`,
    );

    const check = await checkCounts(f, accepted);
    say(`soak: every count written: ${check.scanned.items} items, ${check.cells} cells, mismatches ${check.mismatches}`);
    for (const s of check.samples) say(`soak:   ${s}`);
    const ok =
      growth.every((g) => g.ok) && flushLag.ok && check.mismatches === 0 && stats.edgeMismatches.length === 0 && stats.gaveUp === 0;
    say(`soak: ${ok ? 'PASS' : 'FAIL'}`);
    return { ok, stats, growth, flushLag, mismatches: check.mismatches, lines };
  } finally {
    await fleet?.stop();
  }
}
