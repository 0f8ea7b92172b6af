export class KeyLayoutError extends Error {
  readonly code = 'TALLY_ERR_KEY_LAYOUT';
  constructor(message: string) {
    super(message);
    this.name = 'KeyLayoutError';
  }
}
