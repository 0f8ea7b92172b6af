import { TallyError } from '@tally/key-layout';

/** A condition the harness polled for did not come true in time. The message says what was awaited and what was seen. */
export class WaitTimeoutError extends TallyError {
  readonly code = 'TALLY_ERR_WAIT_TIMEOUT';
}

/** A test service or process could not be started (binary missing, port taken, exited early). */
export class ServiceStartError extends TallyError {
  readonly code = 'TALLY_ERR_SERVICE_START';
}
