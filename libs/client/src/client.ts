import { createIntake, createProducerConnection, type EnqueueOptions, type IntakeLimits } from '@tally/intake';
import { closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type CompiledRules, type EventInput } from '@tally/schema';
import type { Redis } from 'ioredis';

export interface TallyClientOptions {
  /**
   * `redis://…` (the client opens and closes its own fail-fast producer connection) or an ioredis instance made
   * with createProducerConnection (the caller keeps it and quits it).
   */
  connection: string | Redis;
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
   * Throws TooManyEventsError, InvalidArgumentError, ValidationError or QueueUnavailableError.
   */
  enqueueEvents(store: string, events: readonly EventInput[], opts?: EnqueueOptions): Promise<{ batchId: string; accepted: number }>;
  close(): Promise<void>;
}

/** The queue path into Tally for trusted services (docs/DESIGN.md data flow), with the collector's validation. */
export function createTallyClient(opts: TallyClientOptions): TallyClient {
  const owned = typeof opts.connection === 'string';
  const redis = typeof opts.connection === 'string' ? createProducerConnection(opts.connection) : opts.connection;
  const onError = opts.onError ?? (() => {});
  if (owned) redis.on('error', onError);
  const queues: TallyQueues = createQueues(redis);
  for (const q of Object.values(queues)) q.on('error', onError);
  const intake = createIntake({
    queues,
    redis,
    rules: opts.rules ?? compileRules(defaultRules),
    limits: { maxEvents: 100_000, ...opts.limits },
    source: 'client',
    readyTimeoutMs: opts.readyTimeoutMs ?? 5_000,
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
