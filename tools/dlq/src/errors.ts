export type DlqErrorCode =
  | 'TALLY_ERR_DLQ_UNKNOWN_QUEUE'
  | 'TALLY_ERR_DLQ_JOB_NOT_FOUND'
  | 'TALLY_ERR_DLQ_NOT_FAILED'
  | 'TALLY_ERR_DLQ_PAST_DEDUPE_WINDOW'
  | 'TALLY_ERR_DLQ_BAD_DURATION'
  | 'TALLY_ERR_DLQ_BAD_FILTER';

/** A refused dead-letter operation. `message` is one line saying what and why. */
export class DlqError extends Error {
  constructor(
    readonly code: DlqErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DlqError';
  }
}
