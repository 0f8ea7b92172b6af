import type { JobsOptions } from 'bullmq';
import { QUEUE, type QueueName } from './names';

export interface QueueSettings {
  /**
   * How often a job may stall (its worker killed, or Redis restarted under it) and still be retried. Every Tally
   * job is idempotent (batch ids, watermarks), so a stalled job is always safe to run again; only a job that keeps
   * killing its worker should end in the failed set. BullMQ's default of 1 failed flush jobs after two crashes,
   * and a failed flush job strands its row (its deterministic job id blocks every later flush of the row).
   */
  maxStalledCount: number;
  /** Default job options: attempts, backoff and retention. */
  jobs: JobsOptions;
}

const DAY = 86_400;

/**
 * Settings of a Tally queue: a stalled job retried up to 20 times, `attempts` with exponential backoff from
 * `delayMs` (jitter 0.5), completed jobs removed as `removeOnComplete` says, failed jobs kept 14 days (at most
 * `failedKept`). BullMQ applies removeOnFail only when a job of the same queue shard fails: the worker apps' look
 * every 5 minutes removes the failed jobs older than its age too (LeftoverQueueShards, failedRetentionMs).
 */
const queueSettings = (o: {
  attempts: number;
  delayMs: number;
  removeOnComplete: JobsOptions['removeOnComplete'];
  failedKept: number;
}): QueueSettings => ({
  maxStalledCount: 20,
  jobs: {
    attempts: o.attempts,
    backoff: { type: 'exponential', delay: o.delayMs, jitter: 0.5 },
    removeOnComplete: o.removeOnComplete,
    removeOnFail: { age: 14 * DAY, count: o.failedKept },
  },
});

/**
 * Per-queue settings, exhaustive over the queue names. Worker concurrency and the job lock come from each
 * app's config (AGGREGATOR_CONCURRENCY, WRITER_CONCURRENCY, JOB_LOCK_MS), since operators tune them per deployment. Failed jobs are the dead-letter queue: they are kept
 * for 14 days (count-capped), then removed within about 5 minutes, so an operator can inspect and replay them with
 * tools/dlq meanwhile.
 */
export const QUEUE_SETTINGS: Record<QueueName, QueueSettings> = {
  // Completed batches carry their events (up to ~150 KB each): drop them at once. A retried request is still
  // counted once: its batch id is remembered by the aggregator for DEDUPE_WINDOW_SECONDS.
  [QUEUE.events]: queueSettings({ attempts: 10, delayMs: 500, removeOnComplete: true, failedKept: 100_000 }),
  // A tick is idempotent: ride out a Redis restart or a cluster master's failover (about a minute of attempts).
  [QUEUE.seal]: queueSettings({ attempts: 8, delayMs: 500, removeOnComplete: { count: 100 }, failedKept: 1_000 }),
  // DynamoDB throttling and outages do not consume attempts (the job is delayed, see the writer); these
  // attempts are for unexpected errors only.
  [QUEUE.dynamoWrites]: queueSettings({ attempts: 8, delayMs: 1_000, removeOnComplete: true, failedKept: 100_000 }),
  // A restamp is idempotent and resumable: retried 5-10 s after a failure, then twice as long each time (the last
  // try some 1.5-3 h after the one before, 3-6 h in all: a DynamoDB outage or a throttled Scan), then the failed set
  // (replay it with tools/dlq, or run `tenants restamp-retention`). Completed jobs go at once: the dynamo-writer logs
  // each result, and a job id must not outlive its store.
  [QUEUE.maintenance]: queueSettings({ attempts: 12, delayMs: 10_000, removeOnComplete: true, failedKept: 1_000 }),
};
