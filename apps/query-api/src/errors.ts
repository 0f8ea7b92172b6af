import { classifyError, RetryableWriteError } from '@tally/dynamo';

/** Stable codes of the query API's HTTP errors (the `code` field of every error body). */
export type ProblemCode =
  | 'TALLY_ERR_BAD_REQUEST'
  | 'TALLY_ERR_UNAUTHORIZED'
  | 'TALLY_ERR_FORBIDDEN'
  | 'TALLY_ERR_NOT_FOUND'
  | 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE'
  | 'TALLY_ERR_UNAVAILABLE'
  | 'TALLY_ERR_SHUTTING_DOWN'
  | 'TALLY_ERR_INTERNAL';

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Seconds a client should wait before retrying a 503 (Redis, DynamoDB or the key store unreachable). */
export const RETRY_AFTER_SECONDS = 5;

/**
 * An HTTP error answer: status, stable code, the request field at fault (400s), a message saying what was
 * wrong, and extra headers (`Retry-After`, `WWW-Authenticate`). Becomes `{ error, code, field?, message }`.
 */
export class HttpProblem extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: ProblemCode,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpProblem';
  }
}

/** A 400 naming the request field at fault. */
export const badRequest = (field: string, message: string) => new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', message, field);

/** A 503 with Retry-After. */
export const unavailable = (message: string) =>
  new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', message, undefined, { 'retry-after': String(RETRY_AFTER_SECONDS) });

export interface ProblemBody {
  error: string;
  code: ProblemCode;
  field?: string;
  message: string;
}

export function problemBody(p: HttpProblem): ProblemBody {
  return { error: REASONS[p.statusCode] ?? 'Error', code: p.code, ...(p.field !== undefined ? { field: p.field } : {}), message: p.message };
}

const REDIS_DOWN = /Stream isn't writeable|Connection is closed|Command timed out|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|^LOADING|^READONLY|^MASTERDOWN|^CLUSTERDOWN|^TRYAGAIN/;

/** True for an ioredis error that means Redis did not answer (down, restarting, too slow), not a bad command. */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  return REDIS_DOWN.test(err.message);
}

/** True for a DynamoDB error worth retrying later: unreachable, 5xx, throttled, or reads left unprocessed. */
export function isDynamoUnavailable(err: unknown): boolean {
  if (err instanceof RetryableWriteError) return true;
  const outcome = classifyError(err);
  return outcome === 'unavailable' || outcome === 'throttled';
}
