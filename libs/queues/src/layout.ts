import { storeShard } from '@tally/key-layout';
import { SHARDED_QUEUES, type QueueName } from './names';

/**
 * Where an installation's queues live in Redis: every BullMQ key prefix derives from KEY_PREFIX, so several
 * installations can share one Redis, and is a hash tag, so all keys of one queue (shard) share one Redis Cluster
 * slot (BullMQ's cluster guidance; no ioredis keyPrefix). Changing either value strands the jobs already queued
 * under the old prefixes: drain the queues first.
 */
export interface QueueLayout {
  /** KEY_PREFIX of the config. */
  readonly keyPrefix: string;
  /** QUEUE_SHARDS of the config: shards of the events and dynamo-writes queues (1 = unsharded). */
  readonly shards: number;
}

export const DEFAULT_QUEUE_LAYOUT: QueueLayout = { keyPrefix: 't', shards: 1 };

/**
 * QUEUE_SHARDS' maximum (libs/config env.schema.ts): the shards past a lowered QUEUE_SHARDS are looked for up to it
 * (leftover-shards.ts).
 */
export const MAX_QUEUE_SHARDS = 256;

/** How many shards a queue has under a layout (the seal queue is never sharded). */
export function shardCount(layout: QueueLayout, queue: QueueName): number {
  return SHARDED_QUEUES.has(queue) ? layout.shards : 1;
}

/** BullMQ prefix of one shard of a queue: `{t:events:0}`, `{t:seal}`. */
export function queuePrefix(layout: QueueLayout, queue: QueueName, shard = 0): string {
  if (!SHARDED_QUEUES.has(queue)) return `{${layout.keyPrefix}:${queue}}`;
  if (!Number.isInteger(shard) || shard < 0 || shard >= layout.shards) {
    throw new RangeError(`shard ${shard} of queue ${queue} does not exist (QUEUE_SHARDS=${layout.shards})`);
  }
  return `{${layout.keyPrefix}:${queue}:${shard}}`;
}

/** The shard (0..shards-1) of a store: stable across processes and restarts (the sealer shards stores alike). */
export const shardOfStore = storeShard;
