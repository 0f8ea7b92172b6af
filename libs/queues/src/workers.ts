import { UnrecoverableError, Worker, type ConnectionOptions, type Job, type Processor } from 'bullmq';
import { Cluster } from 'ioredis';
import type { z } from 'zod';
import { clusterWorkerConnection } from './connection';
import { queuePrefix, shardCount, type QueueLayout } from './layout';
import type { QueueName } from './names';
import { QUEUE_SETTINGS } from './settings';

export interface ShardWorkerOptions {
  connection: ConnectionOptions;
  /** Jobs at once, per shard. */
  concurrency: number;
  /** The job lock (JOB_LOCK_MS), also the stalled-job check's interval; the stall count is the queue's setting. */
  lockMs: number;
}

/**
 * One BullMQ Worker per shard of a queue (one for an unsharded queue), all running the same processor: every
 * worker process serves every shard, so any replica can take any store's jobs.
 */
export function createShardWorkers(queue: QueueName, processor: Processor, layout: QueueLayout, opts: ShardWorkerOptions): Worker[] {
  return Array.from({ length: shardCount(layout, queue) }, (_, shard) =>
    shardWorker(queue, processor, queuePrefix(layout, queue, shard), opts),
  );
}

/** A BullMQ Worker of the queue shard under `prefix` (queuePrefix), with the queue's stall settings. */
export function shardWorker(queue: QueueName, processor: Processor, prefix: string, opts: ShardWorkerOptions): Worker {
  return new Worker(queue, processor, {
    connection: workerConnection(opts.connection),
    concurrency: opts.concurrency,
    lockDuration: opts.lockMs,
    stalledInterval: opts.lockMs,
    maxStalledCount: QUEUE_SETTINGS[queue].maxStalledCount,
    prefix,
  });
}

/** The connection a Worker is given: on a Redis Cluster, clusterWorkerConnection's (no cluster ready check). */
function workerConnection(connection: ConnectionOptions): ConnectionOptions {
  if (!(connection instanceof Cluster) || connection.options.enableReadyCheck === false) return connection;
  return clusterWorkerConnection(connection);
}

/**
 * A job's data read with its queue's schema. A payload that does not parse fails the job for good (retrying cannot
 * help: UnrecoverableError, to the failed set), naming `what` and the first issue (`invalid flush payload: pk: …`);
 * `onInvalid` runs first (a metric).
 */
export function jobData<S extends z.ZodType>(schema: S, job: Pick<Job, 'data'>, what: string, onInvalid?: () => void): z.output<S> {
  const parsed = schema.safeParse(job.data);
  if (parsed.success) return parsed.data;
  onInvalid?.();
  throw new UnrecoverableError(`invalid ${what}: ${issueText(parsed.error.issues[0]!)}`);
}

/**
 * `<path>: <message>`; the message alone for an issue of the payload as a whole (an empty path: not an object, an
 * unknown key) and for one whose message names its own place already (checkFlatRows' `rows.8: not a day: …`).
 */
function issueText(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.');
  if (path === '' || issue.message.startsWith(`${path}.`) || issue.message.startsWith(`${path}:`)) return issue.message;
  return `${path}: ${issue.message}`;
}
