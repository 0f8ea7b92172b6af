import { STATUS_CODES } from 'node:http';
import type { ProblemAnswer } from '@tally/contracts';

/** Stable codes of Tally's HTTP errors: the `code` member of every problem body. */
export type ProblemCode =
  | 'TALLY_ERR_BAD_REQUEST'
  | 'TALLY_ERR_MALFORMED_BODY'
  | 'TALLY_ERR_VALIDATION'
  | 'TALLY_ERR_UNAUTHORIZED'
  | 'TALLY_ERR_FORBIDDEN'
  | 'TALLY_ERR_NOT_FOUND'
  | 'TALLY_ERR_METHOD_NOT_ALLOWED'
  | 'TALLY_ERR_CONFLICT'
  | 'TALLY_ERR_REQUEST_TIMEOUT'
  | 'TALLY_ERR_BODY_TOO_LARGE'
  | 'TALLY_ERR_TOO_MANY_EVENTS'
  | 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE'
  | 'TALLY_ERR_UNSUPPORTED_ENCODING'
  | 'TALLY_ERR_HEADERS_TOO_LARGE'
  | 'TALLY_ERR_IDEMPOTENCY_CONFLICT'
  | 'TALLY_ERR_RATE_LIMITED'
  | 'TALLY_ERR_BACKPRESSURE'
  | 'TALLY_ERR_UNAVAILABLE'
  | 'TALLY_ERR_REDIS_REPLICAS_BEHIND'
  | 'TALLY_ERR_SHUTTING_DOWN'
  | 'TALLY_ERR_INTERNAL';

/** The media type of every error answer (RFC 9457). */
export const PROBLEM_TYPE = 'application/problem+json';

export interface ProblemOptions {
  /** The request member at fault (`ts`, `query.from`, `body`, the header name, …). */
  field?: string;
  /** Extension members of the body (`errors`, `limit`, `count`, …). */
  extra?: Record<string, unknown>;
  /** Headers of the answer (`Retry-After`, `WWW-Authenticate`). */
  headers?: Record<string, string>;
  /** What went wrong underneath (logged, never sent). */
  cause?: unknown;
}

/**
 * An HTTP error answer: status, stable code, a detail saying what was wrong and where, the field at fault,
 * extension members and headers. Thrown from a hook or route, the edge plugin answers it as
 * {@link problemBody}.
 */
export class HttpProblem extends Error {
  readonly field: string | undefined;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    readonly statusCode: number,
    readonly code: ProblemCode,
    detail: string,
    opts: ProblemOptions = {},
  ) {
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'HttpProblem';
    this.field = opts.field;
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }
}

/**
 * The RFC 9457 body Tally answers every 4xx and 5xx with. Always `type: 'about:blank'`: `title` is the HTTP status
 * phrase and `code` says which error it is.
 */
export function problemBody(p: HttpProblem): ProblemAnswer {
  return {
    ...p.extra,
    type: 'about:blank',
    title: STATUS_CODES[p.statusCode] ?? 'Error',
    status: p.statusCode,
    code: p.code,
    detail: p.message,
    ...(p.field !== undefined ? { field: p.field } : {}),
  };
}

/** A 400 naming the request member at fault. */
/** How often a member given once at most was given, as a refusal says it: `twice`, `3 times`. */
export const timesGiven = (n: number) => (n === 2 ? 'twice' : `${n} times`);

export const badRequest = (field: string, detail: string) => new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', detail, { field });

/** A 503 with Retry-After. */
export const unavailable = (detail: string, retryAfterSeconds: number, cause?: unknown) =>
  new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', detail, { headers: { 'retry-after': String(retryAfterSeconds) }, cause });

/** The problem body as a zod schema, for the routes' OpenAPI `response` entries (defined with the contracts, so the dashboard parses the same shape). */
export { problemSchema as PROBLEM_SCHEMA } from '@tally/contracts';
