import { Redis, type RedisOptions } from 'ioredis';

export interface ProducerConnectionOptions {
  /** Deadline of one Redis command (an addBulk included); default 5000 ms. */
  commandTimeoutMs?: number;
  /** Default 2000 ms. */
  connectTimeoutMs?: number;
}

/**
 * A Redis connection for producers (BullMQ's production guide): commands fail at once while disconnected
 * (`enableOfflineQueue: false`), a command is retried at most once after a reconnect, and every command has a
 * deadline, so a request is answered 503 rather than held while Redis is away. Reconnects forever in the background.
 */
export function createProducerConnection(
  url: string,
  opts: ProducerConnectionOptions & Omit<RedisOptions, 'enableOfflineQueue' | 'maxRetriesPerRequest'> = {},
): Redis {
  const { commandTimeoutMs, connectTimeoutMs, ...rest } = opts;
  return new Redis(url, {
    connectionName: 'tally-producer',
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: commandTimeoutMs ?? 5_000,
    connectTimeout: connectTimeoutMs ?? 2_000,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
    ...rest,
  });
}

/** Resolves once `redis` is ready, or rejects after `timeoutMs` (0: only when it already is). */
export async function waitForReady(redis: Pick<Redis, 'status' | 'once' | 'off'>, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  if (timeoutMs <= 0 || redis.status === 'end') throw new Error(`redis connection is ${redis.status}`);
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('end', onEnd);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onEnd = () => done(new Error('redis connection was closed'));
    const timer = setTimeout(() => done(new Error(`redis connection is ${redis.status} after ${timeoutMs}ms`)), timeoutMs);
    redis.once('ready', onReady);
    redis.once('end', onEnd);
  });
}
