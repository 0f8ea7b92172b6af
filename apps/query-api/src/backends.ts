import { classifyError, RetryableReadError } from '@tally/dynamo';
import { unavailable, type HttpProblem } from '@tally/http';
import { SnapshotContendedError } from '@tally/query';
import { isRedisUnavailable } from '@tally/queues';

/** Seconds a client should wait before retrying a 503 (Redis or DynamoDB unreachable). */
export const RETRY_AFTER_SECONDS = 5;

/** True for a DynamoDB error worth retrying later: unreachable, 5xx, throttled, or reads left unprocessed. */
function isDynamoUnavailable(err: unknown): boolean {
  if (err instanceof RetryableReadError) return true;
  const outcome = classifyError(err);
  return outcome === 'unavailable' || outcome === 'throttled';
}

/**
 * A backend that did not answer, or a read that found no moment to snapshot the store's buckets in (seals between
 * every try), as a 503 with Retry-After; undefined for any other error.
 */
export function backendProblem(err: unknown): HttpProblem | undefined {
  if (err instanceof SnapshotContendedError)
    return unavailable(
      `the store's buckets were sealed during every try of one consistent read (${err.tries} tries); retry later`,
      RETRY_AFTER_SECONDS,
      err,
    );
  if (isRedisUnavailable(err)) return unavailable('Redis is unavailable; retry later', RETRY_AFTER_SECONDS, err);
  if (isDynamoUnavailable(err)) return unavailable('DynamoDB is unavailable or throttling; retry later', RETRY_AFTER_SECONDS, err);
  return undefined;
}
