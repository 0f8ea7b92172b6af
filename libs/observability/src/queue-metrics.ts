import type { JobType, Queue } from 'bullmq';
import { Counter, Gauge, type Registry } from 'prom-client';
import { within } from './within';

export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'] as const satisfies readonly JobType[];

type CountedQueue = Pick<Queue, 'name' | 'getJobCounts'>;

/**
 * Registers `tally_queue_jobs{queue,state}`, read with `getJobCounts` on every scrape. When Redis is down or slow
 * the previous values stay and `tally_queue_metrics_errors_total{queue}` counts the miss; a scrape never throws
 * and never waits longer than `timeoutMs` (default 1000 ms) for a queue's counts. Shards of one queue (same name,
 * other prefixes) are summed.
 */
export function queueDepthMetrics(
  registry: Registry,
  queues: readonly CountedQueue[],
  opts: { timeoutMs?: number } = {},
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

  // At most one read per queue outstanding. The worker apps' connections queue commands while Redis is away (no
  // retry limit), so a read can wait as long as the outage: a scrape gives up on it after `timeoutMs`, and the next
  // scrapes wait on that same read rather than queue one more each, to be sent all at once on the reconnect.
  const pending = new Map<string, Promise<Array<Record<string, number>>>>();
  const counts = (name: string, shards: readonly CountedQueue[]) => {
    let read = pending.get(name);
    if (!read) {
      read = Promise.all(shards.map((q) => q.getJobCounts(...QUEUE_STATES))).finally(() => pending.delete(name));
      pending.set(name, read);
    }
    return read;
  };

  async function read(): Promise<void> {
    await Promise.all(
      [...byName].map(async ([name, shards]) => {
        try {
          const read = await within(counts(name, shards), timeoutMs, 'no answer');
          for (const state of QUEUE_STATES)
            gauge.set(
              { queue: name, state },
              read.reduce((sum, c) => sum + (c[state] ?? 0), 0),
            );
        } catch {
          errors.inc({ queue: name });
        }
      }),
    );
  }
  return gauge;
}

/** A queue worker as failedJobsCounter sees it (BullMQ's Worker): its queue's name and its 'failed' event. */
type FailingWorker = {
  readonly name: string;
  on(event: 'failed', listener: (job: { finishedOn?: number } | undefined, error: Error, prev: string) => void): unknown;
};

/**
 * Registers `tally_jobs_failed_total{queue}`: jobs the workers moved to their queue's failed set (attempts used up,
 * an unrecoverable error, or too many stalls), counted as it happens. Unlike the failed set's size
 * (`tally_queue_jobs{state="failed"}`), it only grows: the set is capped (QUEUE_SETTINGS) and shrinks on a replay or
 * a purge. BullMQ emits 'failed' for every failed attempt; an attempt it retries leaves the job without
 * `finishedOn`, so a job counts once, when it lands in the failed set. Each replica counts the jobs its own workers
 * failed: aggregate with `sum`.
 */
export function failedJobsCounter(registry: Registry, workers: readonly FailingWorker[]): Counter<'queue'> {
  const failed = new Counter({
    name: 'tally_jobs_failed_total',
    help: "Jobs this process's workers moved to the failed set (attempts used up, unrecoverable, or stalled too often), by queue.",
    labelNames: ['queue'],
    registers: [registry],
  });
  for (const worker of workers) {
    failed.inc({ queue: worker.name }, 0);
    worker.on('failed', (job) => {
      if (!job || job.finishedOn) failed.inc({ queue: worker.name });
    });
  }
  return failed;
}
