import { figure } from '../figure';
import { QUEUE, MAX_EVENTS_PER_JOB } from '@tally/queues';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, type DistinctAdds, type RowDeltas } from '@tally/schema';
import { BucketStore } from '@tally/buckets';
import { metricValue, waitFor } from '@tally/testing';
import type { Redis } from 'ioredis';
import { withFleet } from '../load';
import { cpuMeter } from '../proc';
import { redisBenchmark, usedMemory } from '../redis-benchmark';
import { fmt } from '../stats';
import { makeBatch, prng, zipf } from '../workload';

/** Defaults of DEDUPE_WINDOW_SECONDS and BUCKET_SECONDS (libs/config). */
const DEDUPE_WINDOW_SECONDS = 86_400;
const BUCKET_SECONDS = 900;
/** Rows the workload below can touch: the store, 20,000 products and 200,000 visitors. */
const WORKLOAD_ROWS = 1 + 20_000 + 200_000;
/** AGGREGATOR_CONCURRENCY of the aggregator measured. */
const CONCURRENCY = 8;

/**
 * Events/s applied from a pre-filled events queue by ONE aggregator process, Redis memory per active row and per dedupe
 * record, and redis-benchmark's HINCRBY ceiling on the same redis-server (the method is in the markdown below).
 */
export const aggregatorFigure = figure('aggregator-apply', async (ctx) => {
  const fleetOptions = {
    stores: [{ id: 'BENCH', timeZone: 'UTC' }],
    replicas: { collector: 0, 'query-api': 0, 'dynamo-writer': 0 },
    appEnv: { 'bucket-aggregator': { SEALER_ENABLED: 'false', AGGREGATOR_CONCURRENCY: String(CONCURRENCY) } },
  };
  return withFleet(fleetOptions, async (fleet) => {
    const [{ handle: agg }, redis, queues] = [fleet.app('bucket-aggregator'), fleet.inspect as Redis, fleet.queues];
    const rnd = prng(42);
    const [products, visitors] = [zipf(20_000, 1.1, rnd), zipf(200_000, 0.9, rnd)];
    const [now, compiled] = [Date.now(), compileRules(defaultRules)];
    /** A job's payload of `size` events: the events, or rolled up as the collector sends them (`rows`). */
    const payload = (shape: 'events' | 'rows', size: number) => {
      const events = makeBatch(rnd, products, visitors, size, now);
      if (shape === 'events') return { events };
      const distinct: DistinctAdds = new Map();
      const rows = flattenRows(rollup(compiled, 'BENCH', 'UTC', events, new Map(), distinct));
      const members = flattenDistinct(distinct);
      // As the collector sends them (libs/intake): `distinct` only when the batch has members.
      return { rows, ...(members.length > 0 && { distinct: members }), count: size };
    };
    /** Fills the queue with `batches` jobs of `size` events while the aggregator is down, then times it draining them. */
    const measure = async (size: number, batches: number, shape: 'events' | 'rows' = 'events') => {
      await agg.kill(); // started again once the queue is full
      for (let b = 0; b < batches; b += 50) {
        await queues[QUEUE.events].addBulk(
          Array.from({ length: Math.min(50, batches - b) }, (_, i) => {
            const data = { batchId: `bench-${shape}-${size}-${b + i}`, store: 'BENCH', receivedAt: now, source: 'client' };
            return { name: QUEUE.events, data: { ...data, ...payload(shape, size) } };
          }),
        );
      }
      await agg.restart();
      // Measure from the first applied batch to the last, from the app's own counter.
      const applied = async () => metricValue(await agg.metrics(), 'tally_events_applied_total');
      const t0 = await waitFor(async () => ((await applied()) > 0 ? performance.now() : 0), { timeoutMs: 60_000, intervalMs: 5 });
      const start = await applied();
      const meter = cpuMeter({ aggregator: agg.process.pid!, redis: fleet.redis.pid });
      await waitFor(async () => (await applied()) >= batches * size, { timeoutMs: 600_000, intervalMs: 20 });
      const cpu = meter.stop();
      const eventsPerSecond = (batches * size - start) / ((performance.now() - t0) / 1000);
      /** Cores busy on average, and CPU ms per 1,000 events applied. */
      const use = (p: 'aggregator' | 'redis') =>
        `${cpu[p].cores.toFixed(2)} (${((cpu[p].seconds * 1e6) / (batches * size - start)).toFixed(1)} ms)`;
      return { eventsPerSecond, row: `${fmt(eventsPerSecond)} | ${use('aggregator')} | ${use('redis')}` };
    };
    const [eventsPerBatch, batches] = [Math.min(1000, MAX_EVENTS_PER_JOB), ctx.quick ? 60 : 400];
    const big = await measure(eventsPerBatch, batches);
    const eventsPerSecond = big.eventsPerSecond;
    // The same number of events in 100-event batches, as the collector's jobs of 100-event requests.
    const smallBatches = batches * 10;
    const small = await measure(100, smallBatches);
    const rolled = await measure(eventsPerBatch, batches, 'rows');
    await agg.stop();

    // Memory, on an emptied Redis: rows held by an open bucket (row hashes + rows set), measured by applying
    // batches directly; then dedupe records (one per batch id) from many tiny batches.
    await queues[QUEUE.events].obliterate({ force: true });
    await redis.flushall();
    const buckets = new BucketStore({ redis, rules: compiled });
    const apply = (batchId: string, deltas: RowDeltas) => buckets.apply('MEM', batchId, deltas, { now, dedupeTtlSeconds: 86_400 });
    const memBefore = await usedMemory(redis);
    for (let b = 0; b < 50; b++)
      await apply(`m-${b}`, rollup(compiled, 'MEM', 'UTC', makeBatch(rnd, products, visitors, eventsPerBatch, now)));
    const epoch = await redis.get('t:{MEM}:epoch');
    const memRows = await redis.scard(`t:{MEM}:r:${epoch}`);
    const memAfter = await usedMemory(redis);
    const dedupeN = 20_000;
    const tiny = rollup(compiled, 'MEM', 'UTC', [{ type: 'page_view', ts: now, dims: {} }]);
    for (let i = 0; i < dedupeN; i += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, j) => apply(`b-${crypto.randomUUID()}-${i + j}`, tiny)));
    }
    const bytesPerDedupeRecord = ((await usedMemory(redis)) - memAfter) / dedupeN;
    const bytesPer1000Rows = ((memAfter - memBefore - 50 * bytesPerDedupeRecord) / memRows) * 1000;
    const memEvents = 50 * eventsPerBatch;
    const n = ctx.quick ? '200000' : '2000000';
    const hincrbyPerSecond = await redisBenchmark(`-p ${fleet.redis.port} -q -n ${n} -P 64 HINCRBY bench:h f 1`.split(' '));

    // Memory at the measured rate: dedupe records live for the dedupe window (DEDUPE_WINDOW_SECONDS, default 24 h),
    // one per batch; an open bucket (BUCKET_SECONDS, default 900) holds at most every row the traffic can touch.
    const batchesPerSecond = eventsPerSecond / eventsPerBatch;
    const dedupeRecords = batchesPerSecond * DEDUPE_WINDOW_SECONDS;
    const bucketEvents = eventsPerSecond * BUCKET_SECONDS;
    const mb = (bytes: number) => (bytes < 10 * 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${fmt(bytes / 1024 / 1024)} MB`);
    const met = eventsPerSecond >= 100_000 ? 'met' : 'NOT met';
    const summary =
      `${fmt(eventsPerSecond)} events/s applied by one aggregator process (${batches} batches x ${eventsPerBatch}), ${fmt(small.eventsPerSecond)} with 100-event batches, ` +
      `${fmt(rolled.eventsPerSecond)} from jobs the collector rolled up; redis-benchmark HINCRBY -P64 ${fmt(hincrbyPerSecond)}/s; ` +
      `${fmt(bytesPer1000Rows)} B per 1,000 active rows; ${fmt(bytesPerDedupeRecord)} B per dedupe record, ${fmt((dedupeRecords * bytesPerDedupeRecord) / 1024 / 1024)} MB for a 24 h dedupe window at this rate; ` +
      `target >= 100,000 events/s ${met}`;
    const markdown = [
      '',
      `One aggregator process (${CONCURRENCY} jobs at once) draining a pre-filled queue; its CPU and redis-server's while it drains, in cores`,
      'busy and (in brackets) CPU ms per 1,000 events applied:',
      '',
      '| jobs in the queue | events/s applied | aggregator | redis-server |',
      '| --- | ---: | ---: | ---: |',
      `| ${batches} batches of ${eventsPerBatch} events (rolled up by the aggregator: @tally/client's before it knows the store's zone) | ${big.row} |`,
      `| ${smallBatches} batches of 100 events | ${small.row} |`,
      `| ${batches} batches of ${eventsPerBatch} rolled up by the collector (\`rows\`: the collector's jobs, and the client's once it knows the zone) | ${rolled.row} |`,
      '',
      '| figure | value |',
      '|---|---|',
      `| redis-benchmark pipelined HINCRBY ceiling (same redis-server, -P 64) | ${fmt(hincrbyPerSecond)} ops/s |`,
      `| Redis bytes per 1,000 active rows (open bucket hash + rows set) | ${fmt(bytesPer1000Rows)} |`,
      `| Redis bytes per dedupe record (batch id, 24 h TTL) | ${fmt(bytesPerDedupeRecord)} |`,
      `| target (batches of ${eventsPerBatch} events, the first line above) | >= 100,000 events/s: ${met} |`,
      '',
      `Memory at the measured rate (${fmt(eventsPerSecond)} events/s in batches of ${eventsPerBatch} = ${batchesPerSecond.toFixed(1)} batches/s), with the default settings:`,
      '',
      '| what Redis holds | how many | bytes |',
      '|---|---:|---:|',
      `| dedupe records: one per batch for \`DEDUPE_WINDOW_SECONDS\` (${fmt(DEDUPE_WINDOW_SECONDS)} s) | ${fmt(dedupeRecords)} | ${mb(dedupeRecords * bytesPerDedupeRecord)} |`,
      `| open bucket after ${fmt(memEvents)} events of this workload (measured: ${(memEvents / eventsPerSecond).toFixed(1)} s at this rate) | ${fmt(memRows)} rows | ${mb((memRows * bytesPer1000Rows) / 1000)} |`,
      `| open bucket at the end of a \`BUCKET_SECONDS\`=${BUCKET_SECONDS} bucket (${fmt(bucketEvents)} events): at most every row the workload has (${fmt(WORKLOAD_ROWS)}: 1 store, 20,000 products, 200,000 visitors) | ≤ ${fmt(WORKLOAD_ROWS)} rows | ≤ ${mb((WORKLOAD_ROWS * bytesPer1000Rows) / 1000)} |`,
      '',
      'Dedupe records grow with the batch rate, not the event rate: bigger batches (or a shorter `DEDUPE_WINDOW_SECONDS`) keep',
      'them small. Bucket memory grows with the rows touched per bucket, bounded by the catalogue and the visitors.',
    ].join('\n');
    return { summary, markdown };
  });
});
