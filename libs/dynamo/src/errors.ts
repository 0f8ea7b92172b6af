import { TallyError } from '@tally/key-layout';

/** Stable codes of the errors this lib throws (Fastify's FST_ERR_* style). */
export type TableErrorCode = 'TALLY_ERR_TABLE_MISSING' | 'TALLY_ERR_TABLE_KEYS';

/** The DynamoDB table is missing or has a key schema Tally cannot use. `message` is one line an operator can act on. */
export class TableError extends TallyError<TableErrorCode> {
  constructor(
    readonly code: TableErrorCode,
    message: string,
    readonly tableName: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * No answer from the DynamoDB endpoint at all (connection refused, timeout, DNS): the service is down or
 * misaddressed. The message names the endpoint.
 */
export class DynamoUnreachableError extends TallyError {
  readonly code = 'TALLY_ERR_DYNAMO_UNREACHABLE';
}

/**
 * A write that may succeed later as it is: throttling, a 5xx, no answer, or a refusal of the credentials, permissions
 * or table (expired or rotating keys, an IAM rollout, a table being restored: isTransientError). The flush job waits
 * and retries.
 */
export class RetryableWriteError extends TallyError {
  readonly code = 'TALLY_ERR_DYNAMO_RETRYABLE';
}

/** A read that may succeed later: keys DynamoDB left unprocessed past the read's retry budget. A query answers 503. */
export class RetryableReadError extends TallyError {
  readonly code = 'TALLY_ERR_DYNAMO_RETRYABLE';
}

/** A write that can never succeed as is (validation error, item over 400 KB): the job goes to the failed set. */
export class PermanentWriteError extends TallyError {
  readonly code = 'TALLY_ERR_DYNAMO_PERMANENT';
}

/**
 * A read found more items than the caller's bound allows (the overflow items of spilled rows, known only once their
 * item is read): thrown before the read that would pass the bound (getItems) or after reading at most one item past
 * it (queryItems). `needed` counts the items the read would take at least, `max` is the bound, `spilled` the items
 * read spilled (whose overflow items make up the excess).
 */
export class ItemBudgetError extends TallyError {
  readonly code = 'TALLY_ERR_ITEM_BUDGET';
  constructor(
    readonly needed: number,
    readonly max: number,
    readonly spilled: number,
  ) {
    super(
      `the read needs at least ${needed} DynamoDB items, ${spilled === 1 ? 'one spilled item' : `${spilled} spilled items`} with overflow items among them; at most ${max}`,
    );
  }
}
