export class BucketsError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'BucketsError';
    this.code = code;
  }
}
