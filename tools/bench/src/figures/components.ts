import { BucketStore } from '@tally/buckets';
import type { Fleet } from '@tally/loadgen';
import { MAX_EVENTS_PER_JOB, QUEUE } from '@tally/queues';
import { rollup } from '@tally/schema';
import { metricValue, waitFor } from '@tally/testing';
import autocannon from 'autocannon';
import type { Redis } from 'ioredis';
import type { FigureContext } from '../figure';
import { cpuMeter } from '../proc';
import { redisBenchmark, usedMemory } from '../redis-benchmark';
import { fmt } from '../stats';
import { makeBatch, prng, zipf } from '../workload';

// ingest-e2e's fleet, after its end-to-end runs, measures its two stages apart (they were the collector-ingest and
// aggregator-apply figures, each with a fleet of its own): the collector with nothing consuming the queue, then the
// aggregator applying a pre-filled queue, and the Redis memory the apply step leaves.

/** What one collector and one aggregator process are each built for, on the 2-core machine. */
const TARGET_EVENTS_PER_SECOND = 100_000;
/** The fleet's store the stages are measured on (UTC). */
const STORE = 'UTC1';
/** Batch sizes and concurrent connections: enough connections to keep one collector process busy. */
const INTAKE_LOADS = [
  { batch: 100, connections: 32 },
  { batch: 1000, connections: 16 },
] as const;
/** Defaults of DEDUPE_WINDOW_SECONDS and BUCKET_SECONDS (libs/config). */
const DEDUPE_WINDOW_SECONDS = 86_400;
const BUCKET_SECONDS = 900;
/** Rows the apply workload can touch: the store, 20,000 products and 200,000 visitors. */
const WORKLOAD_ROWS = 1 + 20_000 + 200_000;

/**
 * Sustained events/s the fleet's collector accepts alone, with 100- and 1000-event batches, loaded with autocannon
 * over 127.0.0.1 for a bounded time each; next to redis-benchmark's HSET on the same redis-server. The aggregator
 * is stopped and the queue unbounded (emptied between runs), so this is intake alone: parse, validate, enqueue.
 */
export async function intakeAlone(ctx: FigureContext, fleet: Fleet) {
  const seconds = ctx.quick ? 2 : 10;
  ctx.log('collector alone: the aggregator stopped, the queue unbounded');
  // Stopped, not killed: a clean exit writes the CPU profile with --profile.
  await Promise.all([fleet.app('bucket-aggregator').handle.stop(), fleet.app('collector').handle.stop()]);
  await fleet.app('collector').restart({ MAX_QUEUE_DEPTH: '10000000' });
  const [collector, events] = [fleet.app('collector').handle, fleet.queues[QUEUE.events]];
  const headers = { authorization: `Bearer ${fleet.keys[STORE]!.ingest}`, 'content-type': 'application/json' };
  const accepted = async () => metricValue(await collector.metrics(), 'tally_events_accepted_total');
  const runs = [];
  for (const load of INTAKE_LOADS) {
    const ts = new Date().toISOString();
    const batch = Array.from({ length: load.batch }, (_, i) => ({ type: 'view', ts, dims: { product: `P${i % 500}`, visitor: `V${i}` } }));
    const request = { url: `${collector.url}/v1/events`, method: 'POST' as const, headers, body: JSON.stringify(batch) };
    ctx.log(`warm-up: ${load.batch}-event batches`);
    await autocannon({ ...request, connections: load.connections, duration: ctx.quick ? 1 : 3 });
    await events.drain();

    ctx.log(`measuring ${seconds} s: ${load.batch}-event batches, ${load.connections} connections`);
    const [accepted0, t0] = [await accepted(), performance.now()];
    const cpu = cpuMeter({ collector: collector.process.pid!, redis: fleet.redis.pid });
    const r = await autocannon({ ...request, connections: load.connections, duration: seconds, timeout: 30 });
    const used = cpu.stop();
    const n = (await accepted()) - accepted0;
    runs.push({
      ...load,
      seconds: r.duration,
      requestsPerSecond: r['2xx'] / r.duration,
      eventsPerSecond: (r['2xx'] * load.batch) / r.duration,
      acceptedPerSecond: n / ((performance.now() - t0) / 1000),
      p50Ms: r.latency.p50,
      p99Ms: r.latency.p99,
      non2xx: r.non2xx,
      errors: r.errors + r.timeouts,
      collectorCpu: used['collector']!.cores,
      cpuMsPer1000: (used['collector']!.seconds * 1_000 * 1_000) / Math.max(1, n),
      redisCpu: used['redis']!.cores,
    });
    ctx.log(`  ${fmt(runs.at(-1)!.eventsPerSecond)} events/s, ${r.non2xx} non-2xx, ${r.errors} errors`);
    await events.drain();
  }
  const hsetN = ctx.quick ? 200_000 : 2_000_000;
  const hset = await redisBenchmark(['-p', String(fleet.redis.port), '-q', '-t', 'hset', '-P', '16', '-n', String(hsetN)]);
  return { runs, hset, hsetN };
}

/**
 * Events/s the fleet's aggregator applies from a pre-filled events queue (from its first applied batch to the
 * last, from its own counter), then Redis memory per 1,000 active rows and per dedupe record. After intakeAlone.
 */
export async function applyAlone(ctx: FigureContext, fleet: Fleet) {
  const agg = fleet.app('bucket-aggregator');
  const eventsPerBatch = Math.min(1000, MAX_EVENTS_PER_JOB);
  const batches = ctx.quick ? 60 : 400;
  const rnd = prng(42);
  const [products, visitors] = [zipf(20_000, 1.1, rnd), zipf(200_000, 0.9, rnd)];
  const now = Date.now();
  ctx.log(`aggregator alone: ${batches} batches of ${eventsPerBatch} events queued, then the aggregator started`);
  for (let b = 0; b < batches; b += 50) {
    const jobs = Array.from({ length: Math.min(50, batches - b) }, (_, i) => ({
      name: QUEUE.events,
      data: {
        batchId: `apply-${b + i}`,
        store: STORE,
        receivedAt: now,
        source: 'client',
        events: makeBatch(rnd, products, visitors, eventsPerBatch, now),
      },
    }));
    await fleet.queues[QUEUE.events].addBulk(jobs);
  }
  await agg.restart({ SEALER_ENABLED: 'false' });
  const applied = async () => metricValue(await agg.handle.metrics(), 'tally_events_applied_total');
  const t0 = await waitFor(async () => ((await applied()) > 0 ? performance.now() : 0), { timeoutMs: 60_000, intervalMs: 5 });
  const start = await applied();
  await waitFor(async () => (await applied()) >= batches * eventsPerBatch, { timeoutMs: 600_000, intervalMs: 20 });
  const seconds = (performance.now() - t0) / 1000;
  const eventsPerSecond = (batches * eventsPerBatch - start) / seconds;
  await agg.handle.stop();

  // Memory, with nothing running against Redis: rows held by an open bucket (row hashes + rows set), measured by
  // applying batches directly; then dedupe records (one per batch id) from many tiny batches.
  const redis = fleet.inspect as Redis;
  // On an emptied Redis, as before the fold: what else it holds moves the deltas by some 10%.
  await redis.flushall();
  const buckets = new BucketStore({ redis, rules: fleet.rules });
  const memBefore = await usedMemory(redis);
  for (let b = 0; b < 50; b++) {
    const deltas = rollup(fleet.rules, 'MEM', 'UTC', makeBatch(rnd, products, visitors, eventsPerBatch, now));
    await buckets.apply('MEM', `m-${b}`, deltas, { now, dedupeTtlSeconds: DEDUPE_WINDOW_SECONDS });
  }
  const rows = await redis.scard(`t:{MEM}:r:${await redis.get('t:{MEM}:epoch')}`);
  const memAfter = await usedMemory(redis);
  const dedupeN = 20_000;
  const tiny = rollup(fleet.rules, 'MEM', 'UTC', [{ type: 'page_view', ts: now, dims: {} }]);
  for (let i = 0; i < dedupeN; i += 500) {
    await Promise.all(
      Array.from({ length: 500 }, (_, j) =>
        buckets.apply('MEM', `b-${crypto.randomUUID()}-${i + j}`, tiny, { now, dedupeTtlSeconds: 86_400 }),
      ),
    );
  }
  const bytesPerDedupeRecord = ((await usedMemory(redis)) - memAfter) / dedupeN;
  const bytesPer1000Rows = ((memAfter - memBefore - 50 * bytesPerDedupeRecord) / rows) * 1000;
  return {
    eventsPerSecond,
    batches,
    eventsPerBatch,
    bytesPer1000Rows,
    bytesPerDedupeRecord,
    memRows: rows,
    memEvents: 50 * eventsPerBatch,
  };
}

type Intake = Awaited<ReturnType<typeof intakeAlone>>;
type Apply = Awaited<ReturnType<typeof applyAlone>>;
const met = (eventsPerSecond: number) => (eventsPerSecond >= TARGET_EVENTS_PER_SECOND ? 'met' : 'NOT met');

/** The summary's part: each stage alone. */
export function componentsSummary(intake: Intake, apply: Apply): string {
  const [small, big] = [intake.runs[0]!, intake.runs[1]!];
  const dedupeMb = ((apply.eventsPerSecond / apply.eventsPerBatch) * DEDUPE_WINDOW_SECONDS * apply.bytesPerDedupeRecord) / 1024 / 1024;
  return (
    `; collector alone ${fmt(big.eventsPerSecond)} events/s with 1000-event batches (p99 ${big.p99Ms} ms), ${fmt(small.eventsPerSecond)} with ` +
    `100-event batches (redis-benchmark HSET ${fmt(intake.hset)}/s), target ${fmt(TARGET_EVENTS_PER_SECOND)} ${met(big.eventsPerSecond)}; ` +
    `aggregator alone ${fmt(apply.eventsPerSecond)} events/s (${apply.batches} batches x ${apply.eventsPerBatch}), target ${met(apply.eventsPerSecond)}; ` +
    `${fmt(apply.bytesPer1000Rows)} B per 1,000 active rows; ${fmt(apply.bytesPerDedupeRecord)} B per dedupe record, ${fmt(dedupeMb)} MB for a 24 h dedupe window at this rate`
  );
}

/** The figure's sections for each stage alone. */
export function componentsMarkdown(intake: Intake, apply: Apply, hincrby: string): string[] {
  const big = intake.runs[1]!;
  // Memory at the measured rate: dedupe records live for the dedupe window (DEDUPE_WINDOW_SECONDS, default 24 h),
  // one per batch; an open bucket (BUCKET_SECONDS, default 900) holds at most every row the traffic can touch.
  const a = apply;
  const batchesPerSecond = a.eventsPerSecond / a.eventsPerBatch;
  const dedupeRecords = batchesPerSecond * DEDUPE_WINDOW_SECONDS;
  const mb = (bytes: number) => (bytes < 10 * 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${fmt(bytes / 1024 / 1024)} MB`);
  return [
    '',
    '### Collector intake alone',
    '',
    'The same fleet after the runs above, its aggregator stopped and its collector restarted with an unbounded queue (emptied between runs):',
    'autocannon in the bench process sends one batch of view events with two dims over 127.0.0.1, again and again, for a',
    `bounded time. Target: ${fmt(TARGET_EVENTS_PER_SECOND)} events/s with 1000-event batches — **${met(big.eventsPerSecond)}**.`,
    '',
    '| batch | connections | s | requests/s | events/s | accepted/s (metrics) | latency p50 / p99 ms | non-2xx / errors | CPU collector / redis (cores) | collector CPU ms / 1000 events |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...intake.runs.map(
      (r) =>
        `| ${r.batch} | ${r.connections} | ${r.seconds} | ${fmt(r.requestsPerSecond)} | **${fmt(r.eventsPerSecond)}** | ${fmt(r.acceptedPerSecond)} | ` +
        `${r.p50Ms} / ${r.p99Ms} | ${r.non2xx} / ${r.errors} | ${r.collectorCpu.toFixed(2)} / ${r.redisCpu.toFixed(2)} | ${r.cpuMsPer1000.toFixed(2)} |`,
    ),
    '',
    `Same redis-server, same run: \`redis-benchmark -q -t hset -P 16 -n ${intake.hsetN}\` **${fmt(intake.hset)}** ops/s; ${hincrby}.`,
    '',
    '### Aggregator apply alone',
    '',
    `Then ${a.batches} batches of ${a.eventsPerBatch} mixed events (90% product views; Zipf over 20,000 products and 200,000 visitors) queued`,
    'and the aggregator started again (sealer off): events/s from its first applied batch to its last, from its own',
    "`tally_events_applied_total`. Memory: Redis's `used_memory` around batches applied directly to an emptied Redis.",
    '',
    '| figure | value |',
    '|---|---|',
    `| events/s applied (one aggregator process, queue pre-filled, ${a.batches} batches of ${a.eventsPerBatch}) | **${fmt(a.eventsPerSecond)}** |`,
    `| Redis bytes per 1,000 active rows (open bucket hash + rows set) | ${fmt(a.bytesPer1000Rows)} |`,
    `| Redis bytes per dedupe record (batch id, 24 h TTL) | ${fmt(a.bytesPerDedupeRecord)} |`,
    `| target | >= ${fmt(TARGET_EVENTS_PER_SECOND)} events/s: ${met(a.eventsPerSecond)} |`,
    '',
    `Memory at the measured rate (${fmt(a.eventsPerSecond)} events/s in batches of ${a.eventsPerBatch} = ${batchesPerSecond.toFixed(1)} batches/s), with the default settings:`,
    '',
    '| what Redis holds | how many | bytes |',
    '|---|---:|---:|',
    `| dedupe records: one per batch for \`DEDUPE_WINDOW_SECONDS\` (${fmt(DEDUPE_WINDOW_SECONDS)} s) | ${fmt(dedupeRecords)} | ${mb(dedupeRecords * a.bytesPerDedupeRecord)} |`,
    `| open bucket after ${fmt(a.memEvents)} events of this workload (measured: ${(a.memEvents / a.eventsPerSecond).toFixed(1)} s at this rate) | ${fmt(a.memRows)} rows | ${mb((a.memRows * a.bytesPer1000Rows) / 1000)} |`,
    `| open bucket at the end of a \`BUCKET_SECONDS\`=${BUCKET_SECONDS} bucket (${fmt(a.eventsPerSecond * BUCKET_SECONDS)} events): at most every row the workload has (${fmt(WORKLOAD_ROWS)}: 1 store, 20,000 products, 200,000 visitors) | ≤ ${fmt(WORKLOAD_ROWS)} rows | ≤ ${mb((WORKLOAD_ROWS * a.bytesPer1000Rows) / 1000)} |`,
    '',
    'Dedupe records grow with the batch rate, not the event rate: bigger batches (or a shorter `DEDUPE_WINDOW_SECONDS`) keep',
    'them small. Bucket memory grows with the rows touched per bucket, bounded by the catalogue and the visitors.',
  ];
}
