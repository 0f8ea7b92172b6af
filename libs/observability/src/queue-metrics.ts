import type { JobType, Queue } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import { within } from './within';

export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'] as const satisfies readonly JobType[];

export interface QueueDepthMetricsOptions {
  /** How long a scrape waits for one queue's counts before keeping the previous values. Default 1000 ms. */
  timeoutMs?: number;
}

type CountedQueue = Pick<Queue, 'name' | 'getJobCounts'>;

/**
 * Registers `tally_queue_jobs{queue,state}`, read with `getJobCounts` on every scrape. When Redis is down or slow
 * the previous values stay and `tally_queue_metrics_errors_total{queue}` counts the miss; a scrape never throws
 * and never waits longer than `timeoutMs`. Shards of one queue (same name, other prefixes) are summed.
 */
export function queueDepthMetrics(
  registry: Registry,
  queues: readonly CountedQueue[],
  opts: QueueDepthMetricsOptions = {},
): Gauge<'queue' | 'state'> {
  const timeoutMs = opts.timeoutMs ?? 1_000;
  // One read of Redis per scrape, shared by both metrics' collect(): the registry reads the metrics
  // concurrently, and the error counter must show the misses of this very scrape.
  let inflight: Promise<void> | undefined;
  const refresh = (): Promise<void> => (inflight ??= read().finally(() => (inflight = undefined)));

  const gauge = new Gauge({
    name: 'tally_queue_jobs',
    help: 'Jobs per queue and state, read from Redis at scrape time.',
    labelNames: ['queue', 'state'],
    registers: [registry],
    collect: refresh,
  });
  const errors = new Counter({
    name: 'tally_queue_metrics_errors_total',
    help: 'Scrapes that could not read a queue (Redis down or slow); tally_queue_jobs then shows the last values read.',
    labelNames: ['queue'],
    registers: [registry],
    collect: refresh,
  });
  const byName = Map.groupBy(queues, (q) => q.name);
  for (const name of byName.keys()) errors.inc({ queue: name }, 0);

  async function read(): Promise<void> {
    await Promise.all(
      [...byName].map(async ([name, shards]) => {
        try {
          const counts = await within(Promise.all(shards.map((q) => q.getJobCounts(...QUEUE_STATES))), timeoutMs, 'no answer');
          for (const state of QUEUE_STATES)
            gauge.set(
              { queue: name, state },
              counts.reduce((sum, c) => sum + (c[state] ?? 0), 0),
            );
        } catch {
          errors.inc({ queue: name });
        }
      }),
    );
  }
  return gauge;
}
