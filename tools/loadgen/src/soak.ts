import { QUEUE } from '@tally/queues';
import { metricValue, readProc, sleep } from '@tally/testing';
import type { Values } from './cli';
import type { LoadStats } from './driver';
import type { Fleet } from './fleet';

/** The options of a soak run besides the load's: its samples and its bounds. */
export const SOAK_OPTIONS = {
  'sample-seconds': { default: '5', min: 1, help: 'seconds between two samples (--soak)' },
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
  'dedupe-window': {
    default: '60',
    min: 60,
    max: 30 * 86_400,
    integer: true,
    arg: 'S',
    help: 'DEDUPE_WINDOW_SECONDS of the apps: Redis levels off after it',
  },
};
type SoakValues = Values<typeof SOAK_OPTIONS>;
type Say = (line: string) => void;
type Timing = Pick<SoakValues, 'warmup-seconds' | 'dedupe-window' | 'sample-seconds'>;

/** Samples the judges need after the warm-up (judgeGrowth, judgeBound). */
const JUDGED_SAMPLES = 3;

/** --warmup-seconds, else a fifth of the run, at most 180 s, at least the dedupe window + 15 s (batch ids pile up until it is full). */
export function soakWarmup(o: Timing, seconds: number): number {
  return o['warmup-seconds'] ?? Math.min(180, Math.max(o['dedupe-window'] + 15, seconds / 5));
}

/**
 * The shortest soak run (whole seconds) that leaves room after its warm-up for the samples the judges need: shorter ones
 * could only FAIL. The run less its warm-up only grows (the warm-up by a fifth of it at most), so the first that does.
 */
export function shortestSoakSeconds(o: Timing): number {
  const need = JUDGED_SAMPLES * o['sample-seconds'];
  let seconds = Math.ceil(need + (o['warmup-seconds'] ?? 0));
  while (seconds - soakWarmup(o, seconds) < need - 1e-9) seconds++;
  return seconds;
}

type Limits = { maxRelative: number; maxAbsolute: number };

/** One sampled series (a process's RSS, Redis used_memory, the flush lag) and how it is judged. */
export interface Series {
  name: string;
  unit: 'MB' | 's' | 'jobs';
  /** [seconds since start, value] */
  samples: Array<[number, number]>;
  /** Its bounded growth (judgeGrowth); without, it is shown only. */
  limits?: Limits;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const after = (s: Series, warmupSeconds: number) => s.samples.filter(([t]) => t >= warmupSeconds).map(([, v]) => v);

/**
 * Bounded growth: after the warm-up, the mean of the last third of the samples exceeds that of the first third by at
 * most max(maxRelative × first, maxAbsolute). A leak fails; a cache that fills up fails only if still filling at the end.
 */
export function judgeGrowth(s: Series, warmupSeconds: number, limits: Limits) {
  const values = after(s, warmupSeconds);
  const third = Math.max(1, Math.floor(values.length / 3));
  const [firstThird, lastThird] = [mean(values.slice(0, third)), mean(values.slice(values.length - third))];
  const growth = lastThird - firstThird;
  // (Infinity * 0 is NaN: an unlimited relative bound stays unlimited.)
  const allowed = Math.max(limits.maxRelative === Infinity ? Infinity : limits.maxRelative * firstThird, limits.maxAbsolute);
  const [relative, n] = [firstThird > 0 ? growth / firstThird : 0, values.length];
  return { n, firstThird, lastThird, growth, relative, max: Math.max(0, ...values), ok: n >= JUDGED_SAMPLES && growth <= allowed };
}

/** A bounded gauge: every sample after the warm-up at most `limit`. */
export function judgeBound(s: Series, warmupSeconds: number, limit: number) {
  const values = after(s, warmupSeconds);
  const max = Math.max(0, ...values);
  return { max, mean: mean(values), ok: values.length >= JUDGED_SAMPLES && max <= limit, n: values.length };
}

/** VmRSS of a process in MB (Linux /proc), undefined when it is gone. */
function rssMb(pid: number): number | undefined {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readProc(pid, 'status') ?? '');
  return m ? Number(m[1]) / 1024 : undefined;
}

/**
 * Samples the fleet until `done` settles: each process's RSS, Redis used_memory and the flush lag (judged), the apps'
 * V8 heap (saw-toothed by GC) and the events jobs BullMQ keeps (most of Redis's growth; both shown only). Then judges
 * and prints them; true when all hold.
 */
export async function soakRun(f: Fleet, done: Promise<unknown>, stats: LoadStats, o: SoakValues, seconds: number, say: Say) {
  const rss = { maxRelative: o['max-rss-growth'], maxAbsolute: o['max-rss-growth-mb'] };
  const series = new Map<string, Series>();
  const push = (name: string, unit: Series['unit'], t: number, v: number | undefined, limits?: Limits) => {
    if (v === undefined || !Number.isFinite(v)) return;
    const s = series.get(name) ?? series.set(name, { name, unit, samples: [], limits }).get(name)!;
    s.samples.push([t, v]);
  };
  const last = (name: string) => series.get(name)?.samples.at(-1)?.[1];
  const lag: Series = { name: 'tally_flush_lag_seconds', unit: 's', samples: [] };
  const started = Date.now();
  let loadDone = false;
  void done.finally(() => (loadDone = true));
  while (!loadDone) {
    await Promise.race([sleep(o['sample-seconds'] * 1_000), done]);
    const t = (Date.now() - started) / 1_000;
    for (const app of f.apps) push(`${app.name} rss`, 'MB', t, rssMb(app.handle.process.pid), rss);
    push('redis-server rss', 'MB', t, rssMb(f.redis.pid), rss);
    const dynalite = f.pids().findLast((p) => p.what.startsWith('dynalite'));
    if (dynalite) push('dynalite rss', 'MB', t, rssMb(dynalite.pid), rss);
    const usedMemory = Number(/^used_memory:(\d+)/m.exec(await f.inspect.info('memory'))?.[1]) / 1_048_576;
    push('redis used_memory', 'MB', t, usedMemory, { maxRelative: o['max-redis-growth'], maxAbsolute: o['max-redis-growth-mb'] });
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

  const warmup = soakWarmup(o, seconds);
  say(`memory after the ${warmup} s warm-up, mean of the first third vs the last third:`);
  let ok = true;
  const d = (v: number) => v.toFixed(1);
  for (const s of series.values()) {
    const g = judgeGrowth(s, warmup, s.limits ?? { maxRelative: Infinity, maxAbsolute: Infinity });
    say(
      `  ${s.limits ? (g.ok ? 'ok  ' : 'FAIL') : 'info'} ${s.name.padEnd(28)} first third ${d(g.firstThird).padStart(8)} ${s.unit}, last third ${d(g.lastThird).padStart(8)} ${s.unit}, growth ${g.growth >= 0 ? '+' : ''}${d(g.growth)} ${s.unit} (${(g.relative * 100).toFixed(1)}%), max ${d(g.max)} ${s.unit}, ${g.n} samples`,
    );
    if (s.limits && !g.ok) ok = false;
  }
  const delta = (name: string) => ((s) => (s && s.length > 2 ? s.at(-1)![1] - s[0]![1] : 0))(series.get(name)?.samples);
  const [dm, dj] = [delta('redis used_memory'), delta('events jobs kept')];
  if (dj > 0)
    say(
      `  redis used_memory grew ${d(dm)} MB while BullMQ kept ${dj} more completed events jobs (~${d((dm * 1024) / dj)} KB each, payload included)`,
    );
  const flushLag = judgeBound(lag, warmup, o['max-flush-lag']);
  say(
    `  ${flushLag.ok ? 'ok  ' : 'FAIL'} ${'flush lag'.padEnd(28)} max ${flushLag.max.toFixed(1)} s, mean ${flushLag.mean.toFixed(2)} s (bound ${o['max-flush-lag']} s), ${flushLag.n} samples`,
  );
  return ok && flushLag.ok;
}
