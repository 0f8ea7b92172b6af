import { allQueues, closeQueues, createQueues, createRedisConnection, describeRedisTarget, type RedisTarget } from '@tally/queues';
import { oneLine } from './cli';

/**
 * How long an operator command waits for Redis to answer its first command before it says it cannot reach it: the
 * retry strategies below give up sooner on a refused connection; this bounds the rest (packets dropped, …).
 */
export const TOOL_REDIS_DEADLINE_MS = 10_000;

/** A few reconnect attempts, then give up (null): the connection ends and what waits on it fails. */
const fewAttempts = (attempt: number) => (attempt > 3 ? null : 250 * attempt);

/**
 * Redis for an operator command (dlq, tenants) that fails fast when Redis is away: a few reconnect attempts (a
 * Cluster's and Sentinels' own retries would go on for ever, as for a master name the Sentinels do not know), its
 * errors kept to itself, and a first ping with a deadline: unreachable, it prints one line naming the target and
 * exits 1, rather than a stack trace per reconnect attempt.
 */
export async function connectToolRedis(config: RedisTarget & { KEY_PREFIX: string; QUEUE_SHARDS: number }) {
  // Each (re)connect asks the Sentinels for the master, in rounds over all of them: give up after a few rounds.
  const sentinelRetryStrategy = (round: number) => (round > 2 ? null : 250 * round);
  const options = { maxRetriesPerRequest: 2, connectTimeout: 5_000, retryStrategy: fewAttempts, sentinelRetryStrategy };
  const redis = createRedisConnection(config, options, { clusterRetryStrategy: fewAttempts });
  // The latest reason it failed, reported once, below. A cluster's and the Sentinels' 'error' only sums up ("Failed
  // to refresh slots cache.", "All sentinels are unreachable…"); a node's error and each Sentinel's answer say why.
  let lastError: string | undefined;
  redis.on('error', (err: Error) => {
    if (!lastError || !/^(Failed to refresh slots cache|All sentinels are unreachable)/.test(err.message)) lastError = err.message;
  });
  redis.on('node error', (err: Error, node: string) => (lastError = `node ${node}: ${err.message}`));
  redis.on('sentinelError', (err: Error) => (lastError = noSuchMaster(err.message, config) ?? err.message));
  const queues = createQueues(redis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
  for (const q of allQueues(queues)) q.on('error', () => undefined);
  const close = async () => {
    await closeQueues(queues).catch(() => undefined);
    redis.disconnect();
  };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), TOOL_REDIS_DEADLINE_MS)));
  try {
    if ((await Promise.race([redis.ping(), deadline])) === 'late') throw new Error(`no answer within ${TOOL_REDIS_DEADLINE_MS / 1000}s`);
  } catch (err) {
    const { message } = err as Error;
    const cause = lastError ?? message;
    const late = message.startsWith('no answer within') && cause !== message ? ` (${message})` : '';
    process.stderr.write(`tally: cannot reach Redis at ${describeRedisTarget(config)}: ${oneLine(cause)}${late}\n`);
    await close();
    process.exit(1);
  } finally {
    clearTimeout(timer);
  }
  return { redis, queues, close };
}

/**
 * A Sentinel's answer that it knows no master of that name, in words, else undefined: ioredis reports it as "failed
 * to connect to sentinel h:p because ERR No such master with that name" (Redis 7) or "connected to sentinel h:p
 * successfully, but got an invalid reply: null" (a null address, older Sentinels).
 */
function noSuchMaster(message: string, config: RedisTarget): string | undefined {
  const sentinel =
    /^(?:failed to connect to|connected to) sentinel (\S+) (?:because ERR No such master|successfully, but got an invalid reply: null$)/.exec(
      message,
    )?.[1];
  if (sentinel) return `sentinel ${sentinel} knows no master named "${config.REDIS_SENTINEL_MASTER ?? 'mymaster'}" (REDIS_SENTINEL_MASTER)`;
}
