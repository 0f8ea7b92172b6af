import { Worker, type Processor, type WorkerOptions } from 'bullmq';
import { queuePrefix, shardCount, type QueueLayout } from './layout';
import type { QueueName } from './names';

/**
 * One BullMQ Worker per shard of a queue, all running the same processor: every worker process serves every
 * shard, so any replica can take any store's jobs. `concurrency` applies per shard.
 */
export function createShardWorkers(
  queue: QueueName,
  processor: Processor,
  layout: QueueLayout,
  opts: Omit<WorkerOptions, 'prefix'>,
): Worker[] {
  return Array.from(
    { length: shardCount(layout, queue) },
    (_, shard) => new Worker(queue, processor, { ...opts, prefix: queuePrefix(layout, queue, shard) }),
  );
}
