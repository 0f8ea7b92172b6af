/** Stable codes of the collector's HTTP errors (the `code` field of every error body). */
export type ProblemCode =
  | 'TALLY_ERR_UNAUTHORIZED'
  | 'TALLY_ERR_FORBIDDEN'
  | 'TALLY_ERR_BODY_TOO_LARGE'
  | 'TALLY_ERR_TOO_MANY_EVENTS'
  | 'TALLY_ERR_MALFORMED_BODY'
  | 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE'
  | 'TALLY_ERR_BAD_REQUEST'
  | 'TALLY_ERR_VALIDATION'
  | 'TALLY_ERR_IDEMPOTENCY_CONFLICT'
  | 'TALLY_ERR_BACKPRESSURE'
  | 'TALLY_ERR_UNAVAILABLE'
  | 'TALLY_ERR_SHUTTING_DOWN'
  | 'TALLY_ERR_NOT_FOUND'
  | 'TALLY_ERR_INTERNAL';

/**
 * An HTTP error answer: status, stable code, a message saying what was wrong and where, optional extra body
 * fields (`errors`, `limit`, …) and headers (`Retry-After`, `WWW-Authenticate`). Thrown or sent, it becomes
 * `{ statusCode, error, code, message, ...extra }`.
 */
export class HttpProblem extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: ProblemCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpProblem';
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function problemBody(p: HttpProblem): Record<string, unknown> {
  return { statusCode: p.statusCode, error: REASONS[p.statusCode] ?? 'Error', code: p.code, message: p.message, ...p.extra };
}
