import { createIntake, createProducerConnection, type EnqueueOptions, type IntakeLimits } from '@tally/intake';
import { redisKeys } from '@tally/key-layout';
import { allQueues, closeQueues, createQueues, type RedisConnection, type RedisTarget, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type CompiledRules, type EventInput } from '@tally/schema';

export interface TallyClientOptions {
  /**
   * `redis://…` or a Redis target (`{ REDIS_URL, REDIS_CLUSTER_NODES }`, for a Redis Cluster): the client opens
   * and closes its own fail-fast producer connection. Or an ioredis instance made with createProducerConnection
   * (the caller keeps it and quits it).
   */
  connection: string | RedisTarget | RedisConnection;
  /** The installation's KEY_PREFIX (default `t`): its queues' prefixes derive from it. */
  keyPrefix?: string;
  /** The installation's QUEUE_SHARDS (default 1): a batch goes to its store's shard of the events queue. */
  queueShards?: number;
  /** Default: the built-in e-commerce rules. Must be the rules the aggregator runs with. */
  rules?: CompiledRules;
  /** Default: the collector's defaults, except 100,000 events per call (split into jobs of MAX_EVENTS_PER_JOB). */
  limits?: Partial<IntakeLimits>;
  /** How long a call waits for Redis while it (re)connects before throwing QueueUnavailableError. Default 5000. */
  readyTimeoutMs?: number;
  /** Called for Redis connection errors (default: ignored; calls fail with QueueUnavailableError meanwhile). */
  onError?: (err: Error) => void;
}

export interface TallyClient {
  /**
   * Validates every event like the collector does and enqueues them for `store`, all or nothing: one invalid
   * event rejects the call with a ValidationError listing each bad event, index, field and reason. Resolves once
   * Redis holds the batch. With `idempotencyKey`, a retried call is counted once.
   * Throws TooManyEventsError, InvalidArgumentError (a bad store id or key, or no events), ValidationError, IdempotencyConflictError, UnknownStoreError
   * (the aggregator refused a batch for this store lately: it has no tenant) or QueueUnavailableError.
   */
  enqueueEvents(store: string, events: readonly EventInput[], opts?: EnqueueOptions): Promise<{ batchId: string; accepted: number }>;
  close(): Promise<void>;
}

/** The queue path into Tally for trusted services (docs/DESIGN.md data flow), with the collector's validation. */
export function createTallyClient(opts: TallyClientOptions): TallyClient {
  const c = opts.connection;
  const target = typeof c === 'string' ? { REDIS_URL: c } : 'REDIS_URL' in c ? c : undefined;
  const owned = target !== undefined;
  const redis = target !== undefined ? createProducerConnection(target) : (c as RedisConnection);
  const onError = opts.onError ?? (() => {});
  if (owned) redis.on('error', onError);
  const keyPrefix = opts.keyPrefix ?? 't';
  const queues: TallyQueues = createQueues(redis, { keyPrefix, shards: opts.queueShards ?? 1 });
  for (const q of allQueues(queues)) q.on('error', onError);
  const intake = createIntake({
    queues,
    redis,
    rules: opts.rules ?? compileRules(defaultRules),
    limits: { maxEvents: 100_000, ...opts.limits },
    source: 'client',
    readyTimeoutMs: opts.readyTimeoutMs ?? 5_000,
    unknownStoreKey: redisKeys(keyPrefix).unknownStore,
  });
  let closed = false;
  return {
    async enqueueEvents(store, events, eopts) {
      if (closed) throw new Error('this Tally client is closed');
      const { batchId, accepted } = await intake.submit(store, events, eopts);
      return { batchId, accepted };
    },
    async close() {
      if (closed) return;
      closed = true;
      await closeQueues(queues);
      if (owned) await redis.quit().catch(() => redis.disconnect());
    },
  };
}
