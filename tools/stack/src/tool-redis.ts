import { setTimeout as delay } from 'node:timers/promises';
import { allQueues, closeQueues, createQueues, createRedisConnection, describeRedisTarget, type RedisTarget } from '@tally/queues';
import { oneLine } from './cli';

/**
 * How long an operator command waits for Redis's first answer, and for each answer after (a Redis frozen or a network
 * dropping packets once connected): bounds what the retry strategies do not. The tools send no blocking command.
 */
export const TOOL_REDIS_DEADLINE_MS = 10_000;

/** A few reconnect attempts, then give up (null): the connection ends and what waits on it fails. */
const fewAttempts = (attempt: number) => (attempt > 3 ? null : 250 * attempt);

/**
 * Redis for an operator command that fails fast (a Cluster's and Sentinels' own retries go on for ever): unreachable,
 * it prints one line naming the target and exits 1, rather than a stack trace per reconnect attempt.
 */
export async function connectToolRedis(config: RedisTarget & { KEY_PREFIX: string; QUEUE_SHARDS: number }) {
  // Each (re)connect asks the Sentinels for the master, in rounds over all of them: give up after a few rounds.
  const sentinelRetryStrategy = (round: number) => (round > 2 ? null : 250 * round);
  const options = {
    maxRetriesPerRequest: 2,
    connectTimeout: 5_000,
    commandTimeout: TOOL_REDIS_DEADLINE_MS,
    retryStrategy: fewAttempts,
    sentinelRetryStrategy,
  };
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
  const deadline = delay(TOOL_REDIS_DEADLINE_MS, 'late' as const, { ref: false });
  try {
    if ((await Promise.race([redis.ping(), deadline])) === 'late') throw new Error(`no answer within ${TOOL_REDIS_DEADLINE_MS / 1000}s`);
  } catch (err) {
    const { message } = err as Error;
    const cause = lastError ?? message;
    const late = message.startsWith('no answer within') && cause !== message ? ` (${message})` : '';
    process.stderr.write(`tally: cannot reach Redis at ${describeRedisTarget(config)}: ${oneLine(cause)}${late}\n`);
    await close();
    process.exit(1);
  }
  return { redis, queues, close };
}

/** ioredis's words for a Sentinel that knows no such master (Redis 7's error, or older Sentinels' null address), said plainly. */
function noSuchMaster(message: string, config: RedisTarget): string | undefined {
  const sentinel =
    /^(?:failed to connect to|connected to) sentinel (\S+) (?:because ERR No such master|successfully, but got an invalid reply: null$)/.exec(
      message,
    )?.[1];
  if (sentinel) return `sentinel ${sentinel} knows no master named "${config.REDIS_SENTINEL_MASTER ?? 'mymaster'}" (REDIS_SENTINEL_MASTER)`;
}
