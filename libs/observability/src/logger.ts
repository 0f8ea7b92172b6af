import { pino, type DestinationStream, type Level, type Logger } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = Level | 'silent';

/**
 * Fields that hold credentials. pino's `*` matches one level, so each name is listed at the top level too:
 * `log.info({ token })` and `log.info({ tenant: { apiKey } })` are both censored. Log a Redis key as `redisKey`.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'headers.authorization',
  'authorization',
  'apiKey',
  'key',
  'token',
  '*.authorization',
  '*.apiKey',
  '*.key',
  '*.token',
] as const;

export const REDACTED = '[redacted]';

export interface CreateLoggerOptions {
  /** The app or tool, the `name` field of every line. */
  name: string;
  /** Default `info`. */
  level?: LogLevel;
  /** Where lines go; default stdout. Tests pass a stream to read them back. */
  destination?: DestinationStream;
}

/** A pino logger with JSON lines, ISO timestamps and credentials censored. Log object first: `log.info({ jobId }, 'msg')`. */
export function createLogger(opts: CreateLoggerOptions): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...REDACTED_PATHS], censor: REDACTED },
    },
    // Synchronous stdout: pino's default asynchronous destination hands writes to the libuv thread pool, and
    // the synchronous flush at process.exit can then overtake a write still in flight (the last lines of a
    // shutdown came out of order under load). Tally's apps log little on hot paths, so sync costs nothing.
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
