export { QUEUE, QUEUE_NAMES, SHARDED_QUEUES, type QueueName } from './names';
export * from './payloads.schema';
export { QUEUE_SETTINGS, type QueueSettings } from './settings';
export { DEFAULT_QUEUE_LAYOUT, queuePrefix, shardCount, shardOfStore, type QueueLayout } from './layout';
export {
  allQueues,
  closeQueues,
  createQueues,
  enqueue,
  enqueueBulk,
  queueFor,
  queueShards,
  QUEUE_SHARDS,
  type TallyQueues,
} from './queues';
export { createShardWorkers, type ShardWorkerOptions } from './workers';
export { jobIdFor } from './job-id';
export { createRedisConnection, describeRedisTarget, type RedisConnection, type RedisTarget } from './connection';
