/** A condition the harness polled for did not come true in time. The message says what was awaited and what was seen. */
export class WaitTimeoutError extends Error {
  readonly code = 'TALLY_ERR_WAIT_TIMEOUT';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WaitTimeoutError';
  }
}

/** A test service or process could not be started (binary missing, port taken, exited early). */
export class ServiceStartError extends Error {
  readonly code = 'TALLY_ERR_SERVICE_START';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ServiceStartError';
  }
}
