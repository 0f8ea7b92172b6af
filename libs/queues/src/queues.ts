import { Queue, type JobsOptions, type ConnectionOptions } from 'bullmq';
import { BULL_PREFIX, QUEUE_NAMES, type QueueName } from './names';
import { payloadSchemas, type PayloadOf } from './payloads.schema';
import { QUEUE_SETTINGS } from './settings';

export type TallyQueues = { readonly [Q in QueueName]: Queue };

/** Producers' queues: one BullMQ Queue per name with the per-queue default job options. */
export function createQueues(connection: ConnectionOptions, prefix = BULL_PREFIX): TallyQueues {
  const out = {} as Record<QueueName, Queue>;
  for (const name of QUEUE_NAMES) {
    out[name] = new Queue(name, { connection, prefix, defaultJobOptions: QUEUE_SETTINGS[name].jobs });
  }
  return out;
}

export async function closeQueues(queues: TallyQueues): Promise<void> {
  await Promise.all(Object.values(queues).map((q) => q.close()));
}

/** Adds a job after checking its payload against the queue's schema (compile time and run time). */
export async function enqueue<Q extends QueueName>(
  queues: Pick<TallyQueues, Q>,
  queue: Q,
  data: PayloadOf<Q>,
  opts?: JobsOptions,
): Promise<string> {
  const payload = payloadSchemas[queue].parse(data);
  const job = await queues[queue].add(queue, payload, opts);
  return job.id!;
}

/** Adds many jobs to one queue in one round trip (MULTI), each payload checked. */
export async function enqueueBulk<Q extends QueueName>(
  queues: Pick<TallyQueues, Q>,
  queue: Q,
  jobs: Array<{ data: PayloadOf<Q>; opts?: JobsOptions }>,
): Promise<string[]> {
  const added = await queues[queue].addBulk(
    jobs.map((j) => ({ name: queue, data: payloadSchemas[queue].parse(j.data), opts: j.opts })),
  );
  return added.map((j) => j.id!);
}
