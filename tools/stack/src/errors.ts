/** Errors that stop `npm start` before anything runs. `message` is one line telling the user what to do. */
export class StackError extends Error {
  constructor(
    readonly code: StackErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'StackError';
  }
}

export type StackErrorCode =
  | 'TALLY_ERR_REDIS_NOT_INSTALLED'
  | 'TALLY_ERR_REDIS_START'
  | 'TALLY_ERR_PORT_TAKEN'
  | 'TALLY_ERR_STACK_RUNNING'
  | 'TALLY_ERR_DYNAMO_START'
  | 'TALLY_ERR_NO_BACKEND';

export const redisNotInstalled = () =>
  new StackError(
    'TALLY_ERR_REDIS_NOT_INSTALLED',
    'redis-server was not found on PATH: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or set REDIS_URL to a running Redis',
  );
