import {
  loadFleet,
  startFleet,
  DEMO_STORES,
  type Fleet,
  type FleetOptions,
  type LoadBatch,
  type LoadOptions,
  type RunLoadOptions,
} from '@tally/loadgen';
import { QUEUE, queueShards } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import { metricValue, sleep, waitFor, waitForQueuesIdle } from '@tally/testing';
import type { FigureContext } from './figure';
import { cpuMeter } from './proc';
import { fmt, mapValues, sum } from './stats';

// Shared by the figures that drive a whole fleet (tools/loadgen's startFleet).

/** The stores every fleet figure uses: three time zones (Kathmandu +05:45, Los Angeles with DST, UTC). */
export const STORES = DEMO_STORES;

/**
 * A fleet on STORES, the default rules, 900-second buckets, AOF everysec, and `opts`. Its apps run from their sources,
 * as a `--baseline` commit's do and as every committed figure was measured (and a CPU profile names their files).
 */
export const benchFleet = (opts: Partial<FleetOptions> = {}) =>
  startFleet({ stores: STORES, rules: defaultRules, bucketSeconds: 900, appendfsync: 'everysec', from: 'sources', ...opts });

/**
 * Waiting events jobs beyond which the collector answers 429: the queue stays bounded (the rate measured is one the
 * pipeline sustains, not a backlog growing), yet never runs dry while refused senders wait their retry (at most 250 ms).
 */
export const MAX_QUEUE_DEPTH = 100;

/** The collector at peak intake: the per-store ingest budget off (INGEST_BUDGET_REQUESTS in a baseline before the token bucket). */
export const PEAK_COLLECTOR = {
  MAX_QUEUE_DEPTH: String(MAX_QUEUE_DEPTH),
  INGEST_BUDGET_EVENTS_PER_SECOND: '0',
  INGEST_BUDGET_REQUESTS: '0',
};

export async function withFleet<T>(opts: Partial<FleetOptions>, run: (fleet: Fleet) => Promise<T>): Promise<T> {
  const fleet = await benchFleet(opts);
  try {
    return await run(fleet);
  } finally {
    await fleet.stop();
  }
}

/** Catalogue size of the generated traffic (Zipf popularity over these). */
export const CATALOGUE = { products: 10_000, visitors: 100_000 } as const;

/**
 * tools/loadgen traffic to the fleet's collector (or through `@tally/client`: `via`) at `rate` events/s or as fast as
 * it answers, until stopped. 429 and 503 answers (QueueFullError, QueueUnavailableError) are retried after at most 250 ms.
 */
export function startBackgroundLoad(
  fleet: Fleet,
  opts: Pick<RunLoadOptions, 'rate' | 'concurrency'> &
    Pick<LoadOptions, 'seed' | 'batchSize'> & {
      catalogue?: { products: number; visitors: number };
      /** Rewrites each batch before it is sent (e.g. the traffic an older commit's rules take). */
      mapBatch?: (batch: LoadBatch) => LoadBatch;
      via?: 'http' | 'client';
    },
) {
  let stopped = false;
  const { via = 'http', rate, concurrency, mapBatch: map } = opts;
  const { stats, accepted, done } = loadFleet(fleet, {
    load: { seed: opts.seed, ...(opts.catalogue ?? CATALOGUE), batchSize: opts.batchSize },
    via,
    rate,
    concurrency,
    map,
    retry: { initialDelayMs: 50, maxDelayMs: 250 },
    shouldStop: () => stopped,
  });
  done.catch(() => undefined);
  return {
    accepted,
    /** Events accepted so far: the collector's count, or the client's in this process. */
    eventsAccepted: async () => (via === 'http' ? appMetric(fleet, 'collector', 'tally_events_accepted_total') : stats.accepted),
    /** Resolves once every batch taken has its answer; throws if the collector answered wrongly. */
    async stop() {
      stopped = true;
      const s = await done;
      if (s.edgeMismatches.length > 0) throw new Error(`the collector answered wrongly: ${s.edgeMismatches.slice(0, 3).join('; ')}`);
      return s;
    },
  };
}

export const appMetric = async (fleet: Fleet, app: Parameters<Fleet['app']>[0], name: string, labels: Record<string, string> = {}) =>
  metricValue(await fleet.app(app).handle.metrics(), name, labels);

export const queueDepth = async (fleet: Fleet) =>
  sum(await Promise.all(queueShards(fleet.queues, QUEUE.events).map((q) => q.getWaitingCount())));

/** Calls `sample` every `intervalMs` until stopped; returns what it collected (a failed sample, an app restarting, left out). */
export function sampler<T>(intervalMs: number, sample: () => Promise<T>) {
  const out: T[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const next = sleep(intervalMs);
      await sample()
        .then((s) => out.push(s))
        .catch(() => undefined);
      await next;
    }
  })();
  return {
    async stop(): Promise<T[]> {
      running = false;
      await loop;
      return out;
    },
  };
}

/**
 * Events/s applied end to end over a window of steady load of `batch`-event batches (after a warm-up), and the CPU
 * of each process per 1000 events: the measure window of ingest-e2e, and of the figures that compare fleets with it.
 */
export async function measureLoad(
  ctx: FigureContext,
  fleet: Fleet,
  opts: { batch: number; concurrency: number; seed: number; warmMs: number; fillWaitMs: number; windowMs: number } & {
    mapBatch?: (b: LoadBatch) => LoadBatch;
    /** `client`: this process is the producer (its CPU counts). */
    via?: 'http' | 'client';
    /** Redis replicas' pids: their CPU counts as Redis's. */
    replicaPids?: readonly number[];
  },
) {
  const { batch, concurrency, seed, mapBatch, via = 'http' } = opts;
  const applied = () => appMetric(fleet, 'bucket-aggregator', 'tally_events_applied_total');
  ctx.log(`${batch}-event batches, ${concurrency} in flight (${via}): warm-up ${opts.warmMs / 1000} s`);
  const load = startBackgroundLoad(fleet, { seed, concurrency, batchSize: batch, mapBatch, via });
  await sleep(opts.warmMs);
  // When the aggregator is the slower stage, the queue fills up to the backpressure limit: measure from there, so
  // accepted and applied rates are the same steady state. When the collector is slower it never fills.
  const full = () => queueDepth(fleet).then((d) => d >= MAX_QUEUE_DEPTH / 2);
  const queueFilled = await waitFor(full, { timeoutMs: opts.fillWaitMs, intervalMs: 100 }).then(
    () => true,
    () => false,
  );
  ctx.log(
    queueFilled
      ? `  queue at the backpressure limit (${MAX_QUEUE_DEPTH} jobs)`
      : '  queue did not fill: the collector side is the slower stage',
  );

  ctx.log(`measuring ${opts.windowMs / 1000} s`);
  const counts = () => Promise.all([applied(), load.eventsAccepted(), queueDepth(fleet)]);
  const [applied0, accepted0, depthStart] = await counts();
  const t0 = performance.now();
  const cpu = cpuMeter({
    collector: fleet.app('collector').handle.process.pid,
    aggregator: fleet.app('bucket-aggregator').handle.process.pid,
    // Every master of a cluster, and the replicas.
    redis: [...(fleet.cluster?.nodes ?? [fleet.redis]).map((n) => n.pid), ...(opts.replicaPids ?? [])],
    bench: process.pid,
  });
  const perSecond = sampler(1_000, async () => ({ t: performance.now(), applied: await applied() }));
  await sleep(opts.windowMs);
  // A window ends once something was applied in it too (for at most four windows more): one in which a stall (an
  // fsync of appendfsync always on a busy disk) applied nothing is no steady state, and would make a ratio of 0.
  await waitFor(async () => (await applied()) > applied0, { timeoutMs: 4 * opts.windowMs, intervalMs: 100 }).catch(() => undefined);
  const [applied1, accepted1, depthEnd] = await counts();
  const seconds = (performance.now() - t0) / 1000;
  const used = cpu.stop();
  const samples = await perSecond.stop();
  const stats = await load.stop();
  // Empty the queue before the next load, so each run applies only its own batches.
  await waitForQueuesIdle(queueShards(fleet.queues, QUEUE.events), { timeoutMs: 120_000, intervalMs: 100 });

  const appliedPerSecond = (applied1 - applied0) / seconds;
  // CPU ms per 1000 events applied of each process, and of collector + aggregator + Redis (+ this process when it is the
  // producer, its load generation included): the cost, whatever the machine's load.
  const cpuMs = mapValues(used, (u) => (u.cores * 1_000_000) / Math.max(1, appliedPerSecond));
  const producer = via === 'client' ? cpuMs.bench : 0;
  const run = {
    batch,
    concurrency,
    via,
    seconds,
    appliedPerSecond,
    acceptedPerSecond: (accepted1 - accepted0) / seconds,
    refused: stats.retries[via === 'http' ? '429' : 'QueueFullError'] ?? 0,
    requests: stats.batches + sum(Object.values(stats.retries)),
    depthStart,
    depthEnd,
    queueFilled,
    cpu: mapValues(used, (u) => u.cores),
    cpuMs: { ...cpuMs, producer, tally: cpuMs.collector + cpuMs.aggregator + cpuMs.redis + producer },
    timeline: samples.slice(1).map((s, k) => ({
      second: Math.round((s.t - t0) / 1000),
      eventsPerSecond: (s.applied - samples[k]!.applied) / ((s.t - samples[k]!.t) / 1000),
    })),
  };
  ctx.log(
    `  ${fmt(appliedPerSecond)} events/s applied, ${fmt(run.acceptedPerSecond)} accepted; queue ${depthStart} -> ${depthEnd} jobs; ` +
      `${run.refused} of ${run.requests} ${via === 'http' ? 'requests answered 429' : 'calls refused (QueueFullError)'}; CPU collector ${run.cpu.collector.toFixed(2)}, aggregator ` +
      `${run.cpu.aggregator.toFixed(2)}, redis ${run.cpu.redis.toFixed(2)}, bench ${run.cpu.bench.toFixed(2)} cores`,
  );
  return run;
}

/** One load's window: events/s applied and accepted, 429s, queue depth, CPU cores per process, per-second timeline. */
export type E2eRun = Awaited<ReturnType<typeof measureLoad>>;
