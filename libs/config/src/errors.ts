/** A missing or malformed environment variable. `message` is one line naming the variable. */
export class ConfigError extends Error {
  readonly code = 'TALLY_ERR_CONFIG';
  constructor(
    message: string,
    readonly variable: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}
