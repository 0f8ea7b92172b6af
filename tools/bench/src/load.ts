import {
  DEMO_STORES,
  loadFleet,
  startFleet,
  type Fleet,
  type FleetOptions,
  type LoadBatch,
  type LoadOptions,
  type RunLoadOptions,
  type StoreSpec,
} from '@tally/loadgen';
import { QUEUE, queueShards } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import { metricValue, sleep } from '@tally/testing';

// Shared by the figures that drive a whole fleet (tools/loadgen's startFleet).

/** The stores every fleet figure uses: three time zones (Kathmandu +05:45, Los Angeles with DST, UTC). */
export const STORES: readonly StoreSpec[] = DEMO_STORES;

/**
 * A tools/loadgen fleet as the figures start it: STORES, the default rules, 900-second buckets, AOF everysec, and
 * `opts`. Its apps run from their sources, as a `--baseline` commit's do and as every committed figure was measured
 * (and a CPU profile names their files).
 */
export const benchFleet = (opts: Partial<FleetOptions> = {}) =>
  startFleet({ stores: STORES, rules: defaultRules, bucketSeconds: 900, appendfsync: 'everysec', from: 'sources', ...opts });

/**
 * Waiting events jobs beyond which the collector answers 429. Low enough that the queue stays bounded (the
 * rate measured is one the pipeline sustains, not a backlog growing), high enough that it never runs dry while
 * refused senders wait their retry (at most 250 ms).
 */
export const MAX_QUEUE_DEPTH = 100;

/**
 * The collector at peak intake of a few stores: the per-store ingest budget off (it is measured separately from the
 * queue; INGEST_BUDGET_REQUESTS is its off switch in a baseline from before the token bucket).
 */
export const PEAK_COLLECTOR = {
  MAX_QUEUE_DEPTH: String(MAX_QUEUE_DEPTH),
  INGEST_BUDGET_EVENTS_PER_SECOND: '0',
  INGEST_BUDGET_REQUESTS: '0',
};

/** `run` with a benchFleet of `opts`, stopped afterwards whatever happens. */
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
 * tools/loadgen traffic (seeded Zipf products and visitors in sessions, the fleet's stores, 10% late events) POSTed
 * to the fleet's collector with each store's ingest key (loadFleet), or enqueued with `@tally/client` (`via`), at
 * `rate` events/s or as fast as it answers, until stopped. 429 and 503 answers (QueueFullError and
 * QueueUnavailableError on the client) are retried after at most 250 ms (the collector's Retry-After is cut to it).
 */
export function startBackgroundLoad(
  fleet: Fleet,
  opts: Pick<RunLoadOptions, 'rate' | 'concurrency'> &
    Pick<LoadOptions, 'seed' | 'batchSize'> & {
      /** Products and visitors of the traffic; default CATALOGUE. */
      catalogue?: { products: number; visitors: number };
      /** Rewrites each batch before it is sent (e.g. the traffic an older commit's rules take). */
      mapBatch?: (batch: LoadBatch) => LoadBatch;
      /** Through the collector (default) or `@tally/client` in this process, as a service would. */
      via?: 'http' | 'client';
    },
) {
  let stopped = false;
  const via = opts.via ?? 'http';
  const { stats, accepted, done } = loadFleet(fleet, {
    load: { seed: opts.seed, ...(opts.catalogue ?? CATALOGUE), batchSize: opts.batchSize },
    via,
    retry: { initialDelayMs: 50, maxDelayMs: 250 },
    ...(opts.rate ? { rate: opts.rate } : {}),
    concurrency: opts.concurrency,
    shouldStop: () => stopped,
    ...(opts.mapBatch ? { map: opts.mapBatch } : {}),
  });
  done.catch(() => undefined);
  return {
    accepted,
    /** Events accepted so far: the collector's count, or the client's in this process. */
    eventsAccepted: async () => (via === 'http' ? appMetric(fleet, 'collector', 'tally_events_accepted_total') : stats.accepted),
    /** Stops taking new batches and resolves once every batch taken has its answer; throws if the collector answered wrongly. */
    async stop() {
      stopped = true;
      const s = await done;
      if (s.edgeMismatches.length > 0) throw new Error(`the collector answered wrongly: ${s.edgeMismatches.slice(0, 3).join('; ')}`);
      return s;
    },
  };
}

/** A counter of an app of the fleet, from its /metrics. */
export const appMetric = async (fleet: Fleet, app: Parameters<Fleet['app']>[0], name: string, labels: Record<string, string> = {}) =>
  metricValue(await fleet.app(app).handle.metrics(), name, labels);

/** Jobs waiting in the events queue, over its shards. */
export async function queueDepth(fleet: Fleet): Promise<number> {
  const waiting = await Promise.all(queueShards(fleet.queues, QUEUE.events).map((q) => q.getWaitingCount()));
  return waiting.reduce((a, b) => a + b, 0);
}

/** Calls `sample` every `intervalMs` until stopped; returns what it collected. */
export function sampler<T>(intervalMs: number, sample: () => Promise<T>) {
  const out: T[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const next = sleep(intervalMs);
      try {
        out.push(await sample());
      } catch {
        // a sample that failed (an app restarting) is left out
      }
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
