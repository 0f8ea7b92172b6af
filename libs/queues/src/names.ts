/**
 * Queue names. Renaming a queue strands every job already in it (waiting, delayed and failed jobs stay under
 * the old name): drain the old queue first or migrate its jobs.
 */
export const QUEUE = {
  /** Event batches from the collector and libs/client, applied to Redis buckets by the aggregator. */
  events: 'events',
  /** Sealer ticks from a job scheduler: seal open buckets, fold, schedule flushes. */
  seal: 'seal',
  /** One job per row to flush: the writer turns the row's outbox into one UpdateItem per DynamoDB item. */
  dynamoWrites: 'dynamo-writes',
  /**
   * Store maintenance run by the dynamo-writer, one job at a time per process: the restamp of a store's visitor items
   * after a change of its visitor-history retention (restamp.ts). Unsharded: a handful of jobs a day.
   */
  maintenance: 'maintenance',
} as const;

export type QueueName = (typeof QUEUE)[keyof typeof QUEUE];
export const QUEUE_NAMES: readonly QueueName[] = Object.values(QUEUE);

/** Queues split into shards by store, so ingest and flushes spread over the nodes of a Redis Cluster. */
export const SHARDED_QUEUES: ReadonlySet<QueueName> = new Set([QUEUE.events, QUEUE.dynamoWrites]);
