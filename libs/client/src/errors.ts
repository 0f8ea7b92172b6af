import { TallyError } from '@tally/key-layout';

/** A call made once `close()` was called: nothing was enqueued, and no retry on this client will be (make a new one). */
export class ClientClosedError extends TallyError {
  readonly code = 'TALLY_ERR_CLIENT_CLOSED';
  constructor() {
    super('this Tally client is closed (close() was called): nothing was enqueued; a new client takes calls');
  }
}
