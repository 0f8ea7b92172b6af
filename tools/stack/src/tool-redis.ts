import { allQueues, closeQueues, createQueues, createRedisConnection, describeRedisTarget, type RedisTarget } from '@tally/queues';

/**
 * Redis for an operator command (dlq, tenants): it fails fast when Redis is away instead of waiting for it (a few
 * reconnect attempts, then the connection gives up), keeps the connection's and the queues' errors to itself, and
 * pings once first: when Redis cannot be reached it prints one line naming the target and exits 1, rather than a
 * stack trace per reconnect attempt.
 */
export async function connectToolRedis(config: RedisTarget & { KEY_PREFIX: string; QUEUE_SHARDS: number }) {
  const redis = createRedisConnection(config, {
    maxRetriesPerRequest: 2,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => (attempt > 3 ? null : 250 * attempt),
  });
  let lastError: Error | undefined;
  redis.on('error', (err) => (lastError = err)); // reported once, below
  const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
  for (const q of allQueues(queues)) q.on('error', () => undefined);
  const close = async () => {
    await closeQueues(queues).catch(() => undefined);
    redis.disconnect();
  };
  try {
    await redis.ping();
  } catch (err) {
    process.stderr.write(`tally: cannot reach Redis at ${describeRedisTarget(config)}: ${(lastError ?? (err as Error)).message}\n`);
    await close();
    process.exit(1);
  }
  return { redis, queues, close };
}
