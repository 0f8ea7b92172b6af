// What can go wrong talking to the query API, as the dashboard tells it to the store owner. Stable codes, like
// the libs' TALLY_ERR_* errors, so views switch on `code` rather than on messages.

type DashboardErrorCode = 'TALLY_ERR_KEY_REJECTED' | 'TALLY_ERR_UNREACHABLE' | 'TALLY_ERR_REQUEST';

abstract class DashboardError extends Error {
  abstract readonly code: DashboardErrorCode;
}

/** 401 or 403: the read key is unknown, revoked, or not a read key. The dashboard signs out. */
export class KeyRejectedError extends DashboardError {
  readonly code = 'TALLY_ERR_KEY_REJECTED';
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`This key was not accepted (${detail})`);
    this.name = 'KeyRejectedError';
  }
}

/** No answer, a timeout, a 5xx or 503, or an answer that is not the API's JSON: try again later. */
export class UnreachableError extends DashboardError {
  readonly code = 'TALLY_ERR_UNREACHABLE';
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`Tally is not reachable (${detail})`, options);
    this.name = 'UnreachableError';
  }
}

/** The API refused the request itself (400, 404): retrying the same request will not help. */
export class RequestError extends DashboardError {
  readonly code = 'TALLY_ERR_REQUEST';
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}
