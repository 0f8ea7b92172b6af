/**
 * The base of the errors Tally's libs throw: a stable `code` (TALLY_ERR_*, in Fastify's FST_ERR_* style) that
 * callers switch on rather than on messages, and `name` the subclass's own.
 */
export abstract class TallyError<Code extends string = string> extends Error {
  abstract readonly code: Code;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A key, key value or day key the layout cannot encode or parse. */
export class KeyLayoutError extends TallyError {
  readonly code = 'TALLY_ERR_KEY_LAYOUT';
}
