import { loadavg } from 'node:os';
import { redisKeys } from '@tally/key-layout';
import { metricValue } from '@tally/testing';
import autocannon from 'autocannon';
import { figure } from '../figure';
import { withFleet } from '../load';
import { cpuMeter } from '../proc';
import { hincrbyCeiling, hincrbyCommand, redisBenchmark } from '../redis-benchmark';
import { fmt } from '../stats';

/** The 1000-event figure the collector is built for, on the 2-core machine. */
const TARGET_EVENTS_PER_SECOND = 100_000;

/** Batch sizes and concurrent connections: enough connections to keep one collector process busy. */
const LOADS = [
  { batch: 100, connections: 32 },
  { batch: 1000, connections: 16 },
] as const;

/**
 * Events/s accepted by ONE collector process under autocannon, next to redis-benchmark on the same redis-server (the
 * method is in the markdown below). Nothing consumes the events queue meanwhile: intake alone (parse, validate, enqueue).
 */
export const collectorIngest = figure('collector-ingest', async (ctx) => {
  const seconds = ctx.quick ? 2 : 10;
  const loadBefore = loadavg()[0]!;
  // One collector (a child process, as production runs it, optionally `node --cpu-prof`) and nothing else.
  const fleetOptions = {
    stores: [{ id: 'BENCH1', timeZone: 'UTC' }],
    replicas: { 'query-api': 0, 'bucket-aggregator': 0, 'dynamo-writer': 0 },
    appEnv: {
      collector: {
        // Nothing drains the queue during a run; backpressure is not what is measured here.
        MAX_QUEUE_DEPTH: '10000000',
        // One store sends everything: the per-store ingest budget would measure itself, not the collector.
        INGEST_BUDGET_EVENTS_PER_SECOND: '0',
        ...(ctx.profileDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${ctx.profileDir}` } : {}),
      },
    },
  };
  return withFleet(fleetOptions, async (fleet) => {
    const [{ handle: collector }, redis, queues, key] = [fleet.app('collector'), fleet.redis, fleet.queues, fleet.keys['BENCH1']!.ingest];
    ctx.log(`collector pid ${collector.process.pid} on ${collector.url}, redis-server pid ${redis.pid} on ${redis.url}`);
    // The rules fingerprint the aggregators would publish (none runs here): the collector rolls batches up, as in production.
    await fleet.inspect.set(redisKeys(fleet.prefix).rules, fleet.rules.fingerprint);

    const runs = [];
    for (const load of LOADS) {
      const body = JSON.stringify(batchOf(load.batch));
      const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const post = { url: `${collector.url}/v1/events`, method: 'POST', headers, body, connections: load.connections } as const;
      ctx.log(`warm-up: ${load.batch}-event batches`);
      await autocannon({ ...post, duration: ctx.quick ? 1 : 3 });
      await queues.events.drain();

      ctx.log(`measuring ${seconds} s: ${load.batch}-event batches, ${load.connections} connections`);
      const acceptedBefore = metricValue(await collector.metrics(), 'tally_events_accepted_total');
      const [cpu, t0] = [cpuMeter({ collector: collector.process.pid, redis: redis.pid }), performance.now()];
      const r = await autocannon({ ...post, duration: seconds, timeout: 30 });
      const used = cpu.stop();
      const accepted = metricValue(await collector.metrics(), 'tally_events_accepted_total') - acceptedBefore;
      const acceptedPerSecond = accepted / ((performance.now() - t0) / 1000);
      const [eventsPerSecond, errors] = [(r['2xx'] * load.batch) / r.duration, r.errors + r.timeouts];
      const cpuMsPer1000 = (used.collector.seconds * 1_000 * 1_000) / Math.max(1, accepted);
      const cores = `${used.collector.cores.toFixed(2)} / ${used.redis.cores.toFixed(2)}`;
      ctx.log(
        `  ${fmt(eventsPerSecond)} events/s, collector ${used.collector.cores.toFixed(2)} cores, ` +
          `${cpuMsPer1000.toFixed(2)} CPU ms per 1000 events, ${r.non2xx} non-2xx, ${r.errors} errors`,
      );
      runs.push({
        ...load,
        eventsPerSecond,
        p99Ms: r.latency.p99,
        row:
          `| ${load.batch} | ${load.connections} | ${r.duration} | ${fmt(r['2xx'] / r.duration)} | **${fmt(eventsPerSecond)}** | ` +
          `${fmt(acceptedPerSecond)} | ${r.latency.p50} / ${r.latency.p99} | ${r.non2xx} / ${errors} | ${cores} | ${cpuMsPer1000.toFixed(2)} |`,
      });
      await queues.events.drain();
    }

    ctx.log('redis-benchmark HSET and HINCRBY (-P 16) against the same redis-server');
    const n = ctx.quick ? 200_000 : 2_000_000;
    const hset = await redisBenchmark(['-p', String(redis.port), '-q', '-t', 'hset', '-P', '16', '-n', String(n)]);
    const hincrby = await hincrbyCeiling(redis.port, n);
    await collector.stop(); // a clean exit writes the CPU profile when profiling
    const big = runs.find((r) => r.batch === 1000)!;
    const small = runs.find((r) => r.batch === 100)!;
    const met = big.eventsPerSecond >= TARGET_EVENTS_PER_SECOND;
    const summary =
      `${fmt(big.eventsPerSecond)} events/s with 1000-event batches (p99 ${big.p99Ms} ms), ` +
      `${fmt(small.eventsPerSecond)} events/s with 100-event batches; redis-benchmark HSET ${fmt(hset)}/s, ` +
      `HINCRBY ${fmt(hincrby)}/s (-P 16); target ${fmt(TARGET_EVENTS_PER_SECOND)} events/s ${met ? 'met' : 'NOT met'}`;
    const markdown = [
      `Load average before the run ${loadBefore.toFixed(1)} (shared machine: events/s varies with the load; the collector's CPU ms per 1000 events much less). One collector process,`,
      'autocannon on 127.0.0.1 in the bench process, view events with two dims, AOF on; nothing consumes the events queue (emptied',
      `between runs). Target: ${fmt(TARGET_EVENTS_PER_SECOND)} events/s with 1000-event batches — **${met ? 'met' : 'not met'}**.`,
      '',
      '| batch | connections | s | requests/s | events/s | accepted/s (metrics) | latency p50 / p99 ms | non-2xx / errors | CPU collector / redis (cores) | collector CPU ms / 1000 events |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...runs.map((r) => r.row),
      '',
      `Same redis-server, same run: \`redis-benchmark -q -t hset -P 16 -n ${n}\` **${fmt(hset)}** ops/s; \`${hincrbyCommand(n)}\` **${fmt(hincrby)}** ops/s.`,
    ].join('\n');
    return { summary, markdown };
  });
});

function batchOf(n: number): unknown[] {
  const ts = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({ type: 'view', ts, dims: { product: `P${i % 500}`, visitor: `V${i}` } }));
}
