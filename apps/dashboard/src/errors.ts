// What can go wrong talking to the query API, as the dashboard tells it to the store owner. Stable codes, like
// the libs' TALLY_ERR_* errors, so views switch on `code` rather than on messages.

/** 401 or 403: the read key is unknown, revoked, or not a read key. The dashboard signs out. */
export class KeyRejectedError extends Error {
  readonly code = 'TALLY_ERR_KEY_REJECTED';
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`This key was not accepted (${detail})`);
    this.name = 'KeyRejectedError';
  }
}

/**
 * No answer, a timeout, a 5xx, or an answer that is not the API's JSON: try again later, and not before
 * `retryAfterMs` when the API said so (Retry-After; the poller waits it out, live.ts RetryHint).
 */
export class UnreachableError extends Error {
  readonly code = 'TALLY_ERR_UNREACHABLE';
  readonly retryAfterMs?: number;
  constructor(detail: string, options?: { cause?: unknown; retryAfterMs?: number | undefined }) {
    super(`Tally is not reachable (${detail})`, options);
    this.name = 'UnreachableError';
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/**
 * 429 `TALLY_ERR_RATE_LIMITED`: Tally answered, but the store made more requests than its rate limit allows
 * (QUERY_RATE_LIMIT_PER_SECOND, over all its keys and open pages). Not an outage: the same request is answered once
 * `retryAfterMs` (Retry-After: the rest of the API's window) has passed. The API client asks again by itself while
 * the request's patience lasts (api.ts); past it, this is thrown and the poller waits it out (live.ts RetryHint).
 */
export class RateLimitedError extends Error {
  readonly code = 'TALLY_ERR_RATE_LIMITED';
  readonly retryAfterMs?: number;
  /** The store's limit as the API names it (`requestsPerSecond` of the problem), when it does. */
  readonly requestsPerSecond?: number;
  constructor(detail: string, options?: { retryAfterMs?: number | undefined; requestsPerSecond?: number | undefined }) {
    super(`Too many requests for this store (${detail})`);
    this.name = 'RateLimitedError';
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    if (options?.requestsPerSecond !== undefined) this.requestsPerSecond = options.requestsPerSecond;
  }
}

/**
 * The API refused the request itself (400, 404): retrying the same request soon will not help, so the poller waits
 * (live.ts RetryHint) until the request changes (a poke) or a full interval has passed.
 */
export class RequestError extends Error {
  readonly code = 'TALLY_ERR_REQUEST';
  readonly refused = true;
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}
