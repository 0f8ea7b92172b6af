import { TallyError } from '@tally/key-layout';

/** A query that cannot be answered as asked; `field` names the request field at fault (400). */
export class QueryError extends TallyError {
  readonly code = 'TALLY_ERR_QUERY';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}
