import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { DEFAULT_QUEUE_LAYOUT, queuePrefix, shardCount, shardOfStore, type QueueLayout } from './layout';
import { QUEUE_NAMES, type QueueName } from './names';
import { payloadSchemas, type PayloadOf } from './payloads.schema';
import { QUEUE_SETTINGS } from './settings';

/** Every shard of every queue, by queue name (index = shard). */
export const QUEUE_SHARDS: unique symbol = Symbol('tally.queueShards');

/** The layout the queues were made with (createQueues), for the shards past its QUEUE_SHARDS (leftoverShardQueues). */
export const QUEUE_LAYOUT: unique symbol = Symbol('tally.queueLayout');

/**
 * Producers' queues. `queues[name]` is shard 0 of a queue (the only one when QUEUE_SHARDS=1); every shard is in
 * `queues[QUEUE_SHARDS][name]`, and jobs of a store go to its shard (queueFor, enqueue).
 */
export type TallyQueues = { readonly [Q in QueueName]: Queue } & {
  readonly [QUEUE_SHARDS]: { readonly [Q in QueueName]: readonly Queue[] };
  readonly [QUEUE_LAYOUT]?: QueueLayout;
};

type ShardedQueues<Q extends QueueName> = Pick<TallyQueues, Q> & Partial<Pick<TallyQueues, typeof QUEUE_SHARDS>>;

/** One BullMQ Queue per queue shard, with the per-queue default job options and the layout's prefixes. */
export function createQueues(connection: ConnectionOptions, layout: QueueLayout = DEFAULT_QUEUE_LAYOUT): TallyQueues {
  const shards = {} as Record<QueueName, Queue[]>;
  const out = {} as Record<QueueName, Queue>;
  for (const name of QUEUE_NAMES) {
    shards[name] = Array.from(
      { length: shardCount(layout, name) },
      (_, shard) => new Queue(name, { connection, prefix: queuePrefix(layout, name, shard), defaultJobOptions: QUEUE_SETTINGS[name].jobs }),
    );
    out[name] = shards[name][0]!;
  }
  return Object.assign(out, { [QUEUE_SHARDS]: shards, [QUEUE_LAYOUT]: layout }) as unknown as TallyQueues;
}

/** Every queue shard, every queue. */
export function allQueues(queues: TallyQueues): Queue[] {
  return QUEUE_NAMES.flatMap((name) => queues[QUEUE_SHARDS][name]);
}

/** Every shard of one queue. */
export function queueShards<Q extends QueueName>(queues: ShardedQueues<Q>, queue: Q): readonly Queue[] {
  return queues[QUEUE_SHARDS]?.[queue] ?? [queues[queue]];
}

/** The shard of `queue` that holds the jobs of `store`. */
export function queueFor<Q extends QueueName>(queues: ShardedQueues<Q>, queue: Q, store: string): Queue {
  const shards = queueShards(queues, queue);
  return shards[shardOfStore(store, shards.length)]!;
}

export async function closeQueues(queues: TallyQueues): Promise<void> {
  await Promise.all(allQueues(queues).map((q) => q.close()));
}

const storeOf = (data: unknown): string | undefined => {
  const store = (data as { store?: unknown } | undefined)?.store;
  return typeof store === 'string' ? store : undefined;
};

const shardFor = <Q extends QueueName>(queues: ShardedQueues<Q>, queue: Q, data: unknown): Queue => {
  const store = storeOf(data);
  return store === undefined ? queues[queue] : queueFor(queues, queue, store);
};

/** Adds a job, to the shard of its store, after checking its payload against the queue's schema (compile time and run time). */
export async function enqueue<Q extends QueueName>(
  queues: ShardedQueues<Q>,
  queue: Q,
  data: PayloadOf<Q>,
  opts?: JobsOptions,
): Promise<string> {
  const payload = payloadSchemas[queue].parse(data);
  const job = await shardFor(queues, queue, payload).add(queue, payload, opts);
  return job.id!;
}

/**
 * Adds many jobs to one queue, one round trip per shard they fall in (BullMQ's addBulk: an ioredis pipeline of one
 * add script per job, not a MULTI transaction), each payload checked. Ids in input order. Not all or nothing: when a
 * job's add fails (an error reply, a connection lost mid-pipeline) this throws and the jobs before and after it may
 * be added; jobs with ids are safe to add again (BullMQ answers an id it holds with that job, adding nothing).
 */
export async function enqueueBulk<Q extends QueueName>(
  queues: ShardedQueues<Q>,
  queue: Q,
  jobs: Array<{ data: PayloadOf<Q>; opts?: JobsOptions }>,
): Promise<string[]> {
  const byShard = new Map<Queue, number[]>();
  const parsed = jobs.map((j, i) => {
    const data = payloadSchemas[queue].parse(j.data);
    const q = shardFor(queues, queue, data);
    let idx = byShard.get(q);
    if (!idx) byShard.set(q, (idx = []));
    idx.push(i);
    return { name: queue, data, opts: j.opts };
  });
  const ids: string[] = new Array(jobs.length);
  await Promise.all(
    [...byShard].map(async ([q, idx]) => {
      const added = await q.addBulk(idx.map((i) => parsed[i]!));
      added.forEach((job, k) => (ids[idx[k]!] = job.id!));
    }),
  );
  return ids;
}
