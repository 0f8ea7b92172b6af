import { createRedisConnection, type RedisConnection, type RedisTarget } from '@tally/queues';
import type { Redis, RedisOptions } from 'ioredis';
import { InvalidArgumentError } from './errors';

const REDIS_URL = /^rediss?:\/\/[^\s]+$/;

/** The default deadline of one Redis command of a producer connection (an addBulk included). */
export const PRODUCER_COMMAND_TIMEOUT_MS = 5_000;

export interface ProducerConnectionOptions {
  /** Deadline of one Redis command (an addBulk included); default PRODUCER_COMMAND_TIMEOUT_MS. */
  commandTimeoutMs?: number;
  /** Default 2000 ms. */
  connectTimeoutMs?: number;
}

/**
 * A Redis connection for producers (BullMQ's production guide): commands fail at once while disconnected
 * (`enableOfflineQueue: false`), a command is retried at most once after a reconnect, and every command has a
 * deadline, so a request is answered 503 rather than held while Redis is away. Reconnects forever in the background.
 * `target` is a redis:// URL or the config's Redis target (REDIS_CLUSTER_NODES for a Redis Cluster).
 */
export function createProducerConnection(
  url: string,
  opts?: ProducerConnectionOptions & Omit<RedisOptions, 'enableOfflineQueue' | 'maxRetriesPerRequest'>,
): Redis;
export function createProducerConnection(
  target: string | RedisTarget,
  opts?: ProducerConnectionOptions & Omit<RedisOptions, 'enableOfflineQueue' | 'maxRetriesPerRequest'>,
): RedisConnection;
export function createProducerConnection(
  target: string | RedisTarget,
  opts: ProducerConnectionOptions & Omit<RedisOptions, 'enableOfflineQueue' | 'maxRetriesPerRequest'> = {},
): RedisConnection {
  const { commandTimeoutMs, connectTimeoutMs, ...rest } = opts;
  const url = typeof target === 'string' ? target : target.REDIS_URL;
  // ioredis reads "", "localhost:6379" or "http://…" as the default 127.0.0.1:6379, or waits on nothing: refuse them.
  if (typeof url !== 'string' || !REDIS_URL.test(url)) {
    throw new InvalidArgumentError(
      'connection',
      `connection ${JSON.stringify(url)} is not a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379); nothing was opened`,
    );
  }
  return createRedisConnection(typeof target === 'string' ? { REDIS_URL: target } : target, {
    connectionName: 'tally-producer',
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: commandTimeoutMs ?? PRODUCER_COMMAND_TIMEOUT_MS,
    connectTimeout: connectTimeoutMs ?? 2_000,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
    ...rest,
  });
}

/** What waitForReady needs of a connection (ioredis' Redis and Cluster both have it). */
export interface ConnectionState {
  readonly status: string;
  once(event: 'ready' | 'end', listener: () => void): unknown;
  off(event: 'ready' | 'end', listener: () => void): unknown;
}

/** ioredis' connection states (Redis and Cluster) in words, for the errors of a call that finds one not ready. */
const STATES: Record<string, string> = {
  wait: 'not connected yet',
  connecting: 'connecting',
  connect: 'connected, not ready yet',
  reconnecting: 'reconnecting',
  close: 'disconnected',
  disconnecting: 'closing',
  end: 'closed',
};
const stateOf = (redis: ConnectionState) => STATES[redis.status] ?? redis.status;

/** The next 'ready' of each connection, shared by the calls waiting for it: one pair of listeners, however many calls. */
const nextReady = new WeakMap<ConnectionState, Promise<void>>();

function readyOf(redis: ConnectionState): Promise<void> {
  let ready = nextReady.get(redis);
  if (!ready) {
    ready = new Promise<void>((resolve, reject) => {
      const onReady = () => {
        redis.off('end', onEnd);
        resolve();
      };
      const onEnd = () => {
        redis.off('ready', onReady);
        reject(new Error('the connection was closed'));
      };
      redis.once('ready', onReady);
      redis.once('end', onEnd);
    }).finally(() => nextReady.delete(redis));
    ready.catch(() => {}); // a 'end' no call waits for any more
    nextReady.set(redis, ready);
  }
  return ready;
}

/** Resolves once `redis` is ready, or rejects after `timeoutMs` (0: only when it already is). */
export async function waitForReady(redis: ConnectionState, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  if (timeoutMs <= 0 || redis.status === 'end') throw new Error(`the connection is ${stateOf(redis)}`);
  // The listeners first: a connection that cannot take them rejects the call at once, its timer cleared unfired.
  const ready = readyOf(redis);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the connection is not ready after ${timeoutMs} ms (${stateOf(redis)})`)), timeoutMs);
  });
  try {
    await Promise.race([ready, late]);
  } finally {
    clearTimeout(timer);
  }
}
