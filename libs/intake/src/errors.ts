import { TallyError } from '@tally/key-layout';
import type { EventError } from '@tally/schema';

/** One or more events are invalid; `errors` names each by index, field and reason. Nothing was enqueued. */
export class ValidationError extends TallyError {
  readonly code = 'TALLY_ERR_VALIDATION';
  constructor(readonly errors: EventError[]) {
    const first = errors
      .slice(0, 3)
      .map((e) => `#${e.index} ${e.field}: ${e.reason}`)
      .join('; ');
    const more = errors.length > 3 ? `; and ${errors.length - 3} more` : '';
    super(`${errors.length} invalid event field${errors.length === 1 ? '' : 's'}: ${first}${more}`);
  }
}

/** More events in one call (or HTTP request) than the limit allows. Nothing was enqueued. */
export class TooManyEventsError extends TallyError {
  readonly code = 'TALLY_ERR_TOO_MANY_EVENTS';
  constructor(
    readonly count: number,
    readonly limit: number,
  ) {
    super(`${count} events in one batch; the limit is ${limit}`);
  }
}

/**
 * A store id, an idempotency key, a `receivedAt` or a `timeZone` that cannot be used, no events at all, or a client
 * option out of range; `field` names it (`options`: an option the client does not know, or options that are not an
 * object). Nothing was enqueued.
 */
export class InvalidArgumentError extends TallyError {
  readonly code = 'TALLY_ERR_INVALID_ARGUMENT';
  constructor(
    readonly field:
      | 'store'
      | 'idempotencyKey'
      | 'events'
      | 'receivedAt'
      | 'timeZone'
      | 'connection'
      | 'waitReplicas'
      | 'idempotencyWindowSeconds'
      | 'limits'
      | 'keyPrefix'
      | 'queueShards'
      | 'readyTimeoutMs'
      | 'backpressure'
      | 'rules'
      | 'onError'
      | 'options',
    message: string,
  ) {
    super(message);
  }
}

/**
 * The idempotency key cannot take this batch; nothing was enqueued. `failedJobId` unset: the key was already used,
 * within two dedupe windows, for a batch with other events (a retry must send the same events; a new batch
 * needs a new key). `failedJobId` set: the key's earlier batch (that job) is in the events queue's failed set, the
 * aggregator having refused it, and BullMQ would answer this batch with that job, queueing nothing: replay the job
 * (`npm run dlq -- replay events <failedJobId>`) or use a new key.
 */
export class IdempotencyConflictError extends TallyError {
  readonly code = 'TALLY_ERR_IDEMPOTENCY_CONFLICT';
  constructor(
    readonly idempotencyKey: string,
    readonly failedJobId?: string,
  ) {
    super(
      failedJobId === undefined
        ? `idempotency key ${JSON.stringify(idempotencyKey)} was already used for a batch with other events; nothing was accepted (send the same events to retry, or use a new key for a new batch)`
        : `idempotency key ${JSON.stringify(idempotencyKey)} was used for a batch that is now in the events queue's failed set (job ${failedJobId}, refused by the aggregator); nothing was accepted. ` +
            `Replay that batch (npm run dlq -- replay events ${failedJobId}) or send this one under a new key`,
    );
  }
}

/**
 * Redis did not take the batch (unreachable, not ready, timed out). Whether the jobs were written is unknown only
 * when the connection broke mid-command; retrying with the same idempotency key is always safe.
 */
export class QueueUnavailableError extends TallyError {
  readonly code = 'TALLY_ERR_QUEUE_UNAVAILABLE';
  /**
   * The batch's idempotency key (the call's, or the one it was given): Redis may hold the batch (a write that timed
   * out), so a retry under this key counts it once either way.
   */
  idempotencyKey?: string;
}

/**
 * The store has no tenant: the aggregator refused a batch for it at `refusedAt` (nothing of that batch was counted;
 * it waits in the events queue's failed set), and refuses the store's calls at once for a while after. Create the
 * tenant, then replay the refused batches (see the client's README); nothing of this call was enqueued.
 */
export class UnknownStoreError extends TallyError {
  readonly code = 'TALLY_ERR_UNKNOWN_STORE';
  constructor(
    readonly store: string,
    readonly refusedAt: Date,
  ) {
    super(
      `store ${JSON.stringify(store)} has no tenant: Tally's aggregator refused a batch for it at ${refusedAt.toISOString()} and nothing of this call was enqueued. ` +
        `Create the tenant (npm run tenants -- create ${store}), then replay the refused batches (npm run dlq -- replay events --reason '^unknown store ${store}:')`,
    );
  }
}

/**
 * The events queue holds more waiting jobs than the limit (the aggregators are behind): nothing was enqueued.
 * Retry after `retryAfterSeconds`, with the same idempotency key; the collector answers 429 for the same reason.
 */
export class QueueFullError extends TallyError {
  readonly code = 'TALLY_ERR_BACKPRESSURE';
  readonly retryAfterSeconds = 2;
  constructor(
    readonly depth: number,
    readonly limit: number,
  ) {
    super(`the store's events queue shard holds ${depth} waiting batches, over the limit of ${limit}; nothing was enqueued, retry later`);
  }
}
