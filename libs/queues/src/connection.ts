import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

/** The Redis an installation uses: one server (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES). */
export interface RedisTarget {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: ReadonlyArray<{ host: string; port: number }> | undefined;
}

/** A connection to either: ioredis' Redis or Cluster client (both run the same commands, scripts and BullMQ). */
export type RedisConnection = Redis | Cluster;

/**
 * Opens a connection to the target with `options` (per node, for a cluster). On a cluster the username,
 * password and TLS of REDIS_URL apply to every node, offline queueing follows `options.enableOfflineQueue`, and
 * no ioredis keyPrefix is ever set (BullMQ's cluster guidance: hash-tag prefixes instead).
 */
export function createRedisConnection(
  target: RedisTarget,
  options: RedisOptions = {},
  cluster: Omit<ClusterOptions, 'redisOptions'> = {},
): RedisConnection {
  if (!target.REDIS_CLUSTER_NODES || target.REDIS_CLUSTER_NODES.length === 0) return new Redis(target.REDIS_URL, options);
  const url = new URL(target.REDIS_URL);
  const auth: RedisOptions = {
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  };
  return new Cluster([...target.REDIS_CLUSTER_NODES], {
    enableOfflineQueue: options.enableOfflineQueue ?? true,
    // A failed-over or restarted master answers MOVED / CLUSTERDOWN for a moment: retry rather than fail.
    retryDelayOnClusterDown: 200,
    retryDelayOnFailover: 200,
    retryDelayOnTryAgain: 200,
    // Slots move back to a restarted master: wait a little between MOVED redirections rather than spend them all at once.
    retryDelayOnMoved: 100,
    slotsRefreshTimeout: 2_000,
    clusterRetryStrategy: (times) => Math.min(100 * times, 2_000),
    ...cluster,
    redisOptions: { ...auth, ...options },
  });
}

/**
 * Closes a connection for good: QUIT when it is connected (what was sent is answered first), otherwise at once. A
 * QUIT on a connection that is not would wait in its offline queue for a Redis that is not there, or be refused.
 */
export async function closeConnection(connection: RedisConnection): Promise<void> {
  if (connection.status === 'ready') await connection.quit().catch(() => connection.disconnect());
  else connection.disconnect();
}

/** A description of the target safe to log (no password). */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.REDIS_CLUSTER_NODES?.length) return `cluster ${target.REDIS_CLUSTER_NODES.map((n) => `${n.host}:${n.port}`).join(',')}`;
  return target.REDIS_URL.replace(/\/\/[^@]*@/, '//***@');
}
