import { Worker, type ConnectionOptions, type Processor } from 'bullmq';
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
  return Array.from(
    { length: shardCount(layout, queue) },
    (_, shard) =>
      new Worker(queue, processor, {
        connection: opts.connection,
        concurrency: opts.concurrency,
        lockDuration: opts.lockMs,
        stalledInterval: opts.lockMs,
        maxStalledCount: QUEUE_SETTINGS[queue].maxStalledCount,
        prefix: queuePrefix(layout, queue, shard),
      }),
  );
}
