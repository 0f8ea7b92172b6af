import { pino, type DestinationStream, type Level, type Logger } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = Level | 'silent';

/**
 * Fields that hold credentials. pino's `*` matches one level, so each name is listed at the top level too:
 * `log.info({ token })` and `log.info({ tenant: { apiKey } })` are both censored. Log a Redis key as `redisKey`.
 * ioredis puts the failed command on its errors (`err.command.args`): an AUTH's holds the password, and a failed
 * AUTH rejects every command queued behind it with that very error.
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
  'err.command.args',
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
      // Fastify's request lines (the worker apps' ops servers) would log `url` with its query string, where a
      // client may have put a key (`?access_token=`): log the path only.
      serializers: { req: requestWithoutQuery },
    },
    // Synchronous stdout: pino's default asynchronous destination hands writes to the libuv thread pool, and
    // the synchronous flush at process.exit can then overtake a write still in flight (the last lines of a
    // shutdown came out of order under load). Tally's apps log little on hot paths, so sync costs nothing.
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/**
 * A request as a log line shows it. A Fastify request: method, url without the query string, client address.
 * A plain object logged as `req`: as it is, its `url` cut at the query string.
 */
export function requestWithoutQuery(req: { method?: string; url?: string; ip?: string; raw?: unknown }): Record<string, unknown> {
  const url = typeof req.url === 'string' ? req.url : undefined;
  const path = url === undefined ? undefined : url.split('?')[0];
  if (req.raw === undefined) return url === undefined ? { ...req } : { ...req, url: path };
  return { method: req.method, url: path, remoteAddress: req.ip };
}
