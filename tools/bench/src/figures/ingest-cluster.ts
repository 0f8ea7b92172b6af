import type { StoreSpec } from '@tally/loadgen';
import { figure, type FigureContext } from '../figure';
import { measureLoad, withFleet, type E2eRun } from '../load';
import { fmt } from '../stats';

/** Stores of the traffic: enough hash tags to spread over three masters and three queue shards. */
const CLUSTER_STORES: readonly StoreSpec[] = Array.from({ length: 24 }, (_, i) => ({
  id: `CL${i}`,
  timeZone: ['UTC', 'Europe/Paris', 'America/New_York'][i % 3]!,
  weight: 1,
}));
const BATCH = 1000;
const IN_FLIGHT = 8;

/** One fleet (one collector, one aggregator, QUEUE_SHARDS=3) on one Redis or on a 3-master cluster, 1000-event batches. */
async function measureSetup(ctx: FigureContext, setup: string, clusterMasters: number | undefined) {
  ctx.log(`${setup}: starting a fleet (QUEUE_SHARDS=3, one collector, one bucket-aggregator, BUCKET_SECONDS=900)`);
  const fleetOptions = {
    stores: CLUSTER_STORES,
    queueShards: 3,
    ...(clusterMasters ? { clusterMasters } : {}),
    replicas: { 'query-api': 0, 'dynamo-writer': 0 },
    appEnv: { collector: { INGEST_BUDGET_EVENTS_PER_SECOND: '0' } },
  };
  const windows = { warmMs: ctx.quick ? 1_000 : 5_000, fillWaitMs: 0, windowMs: ctx.quick ? 2_000 : 20_000 };
  return withFleet(fleetOptions, (fleet) => measureLoad(ctx, fleet, { seed: 300, batch: BATCH, concurrency: IN_FLIGHT, ...windows }));
}

/** Ingest end to end on one Redis and on a 3-master Redis Cluster, with the CPU each costs per 1000 events. */
export const ingestClusterFigure = figure('ingest-cluster', async (ctx) => {
  const one = await measureSetup(ctx, 'one Redis', undefined);
  const cluster = await measureSetup(ctx, '3-master cluster', 3);
  const row = (setup: string, r: E2eRun) =>
    `| ${setup} | ${r.seconds.toFixed(1)} | **${fmt(r.appliedPerSecond)}** | ${r.cpuMs.collector.toFixed(1)} | ${r.cpuMs.aggregator.toFixed(1)} | ` +
    `${r.cpuMs.redis.toFixed(1)} | **${r.cpuMs.tally.toFixed(1)}** |`;
  const markdown = [
    `Two fleets from tools/loadgen, one after the other: one collector and one bucket-aggregator process, \`QUEUE_SHARDS=3\`,`,
    `${CLUSTER_STORES.length} stores, tools/loadgen traffic in ${BATCH}-event batches (${IN_FLIGHT} in flight, as fast as the collector answers);`,
    'first on one redis-server, then on a local Redis Cluster of 3 masters (`REDIS_CLUSTER_NODES`, AOF everysec on every node).',
    "Events/s is the aggregator's `tally_events_applied_total` over the window after a warm-up; CPU is each process's over the",
    'window (every master summed).',
    '',
    '| Redis | s | **events/s end to end** | CPU ms per 1000 events: collector | aggregator | redis-server(s) | **total** |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    row('one Redis', one),
    row('3-master cluster', cluster),
    '',
    `The cluster cost ${(cluster.cpuMs.tally / one.cpuMs.tally).toFixed(2)}× the CPU per event of one Redis and ran at ${(cluster.appliedPerSecond / one.appliedPerSecond).toFixed(2)}×`,
    'its rate, every process on the same 2 cores: one redis-server uses one core at most and is the stage that limits ingest',
    'here (ingest-e2e), so masters spread over both cores take what the other processes leave. With each master on cores of',
    "its own, the Redis part of the cost splits over the masters by the stores' hash slots and the queue shards, and the",
    'aggregators and collectors scale out as replicas (docs/SCALING.md).',
  ].join('\n');
  return {
    summary:
      `${fmt(one.appliedPerSecond)} events/s on one Redis (${one.cpuMs.tally.toFixed(1)} CPU ms per 1000 events), ` +
      `${fmt(cluster.appliedPerSecond)} on a 3-master cluster (${cluster.cpuMs.tally.toFixed(1)} ms) on the same 2 cores`,
    markdown,
  };
});
