export { QUEUE, QUEUE_NAMES, type QueueName } from './names';
export * from './payloads.schema';
export { QUEUE_SETTINGS } from './settings';
export { MAX_QUEUE_SHARDS, queuePrefix, shardCount, shardOfStore } from './layout';
export {
  allQueues,
  closeQueues,
  createQueues,
  enqueue,
  enqueueBulk,
  queueFor,
  queueShards,
  QUEUE_LAYOUT,
  QUEUE_SHARDS,
  type TallyQueues,
} from './queues';
export { createShardWorkers, jobData, shardWorker, type ShardWorkerOptions } from './workers';
export { STRANDED_AFTER_MS, WorkerWatchdog, type WorkerWatchdogOptions } from './worker-watchdog';
export {
  findLeftoverShards,
  LEFTOVER_LOOK_MS,
  LEFTOVER_RECHECK_MS,
  LeftoverQueueShards,
  leftoverShardQueues,
  MAX_LEFTOVER_WORKERS,
  storeWorkQueues,
  type LeftoverQueueShardsOptions,
} from './leftover-shards';
export { jobIdFor } from './job-id';
export { scheduleRetentionRestamp } from './restamp';
export { closeConnection, createRedisConnection, describeRedisTarget, type RedisConnection, type RedisTarget } from './connection';
export {
  createReplicaFence,
  ReplicasBehindError,
  storeFence,
  storeFenceOf,
  warnOnTooFewReplicas,
  type ReplicaFence,
  type StoreFence,
} from './replica-fence';
export { isRedisUnavailable } from './redis-unavailable';
