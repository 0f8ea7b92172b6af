import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { HttpProblem } from '@tally/http';
import { QueueFullError } from '@tally/intake';
import { shardOfStore } from '@tally/queues';

export interface BackpressureOptions {
  /** The shards of the events queue, by index: a store's batches go to shard shardOfStore(store, shards.length). */
  shards: readonly Pick<Queue, 'getWaitingCount'>[];
  /** The producer connection; while it is not ready every request is refused at once. */
  redis: { readonly status: string };
  /** Waiting jobs in a store's events shard beyond which its requests get 429 (MAX_QUEUE_DEPTH, per shard). */
  maxDepth: number;
  /** How often the depth is read; default 250 ms. */
  intervalMs?: number;
  /**
   * A depth read older than this means Redis is not answering (e.g. frozen, where commands hang until their
   * timeout): requests are refused with 503 at once rather than held. Default 2000 ms.
   */
  staleAfterMs?: number;
  log?: Logger;
}

export interface Backpressure {
  /**
   * Throws QueueFullError (429) while the events shard of `store` is over the limit, or the 503 HttpProblem when the
   * collector must not take events now. O(1): no Redis call.
   */
  admit(store: string): void;
  /** The waiting count of all events shards last read, undefined before the first read or while a shard's read fails. */
  readonly depth: number | undefined;
  /**
   * True when the connection is ready and some shard answered its last depth read, recently (/readyz): on a Cluster
   * with a master down the collector still takes the other masters' stores.
   */
  readonly redisUp: boolean;
  /** Reads the depth once now. */
  sample(): Promise<void>;
  start(): void;
  stop(): void;
}

export const REDIS_DOWN_RETRY_AFTER_SECONDS = 5;

/**
 * The waiting count of each events shard, read at most every `intervalMs` by a timer (one read per shard, not per
 * request), and the state of the Redis connection: a request is refused with 429 while its store's shard is deeper
 * than MAX_QUEUE_DEPTH (a backlog in one shard does not refuse the stores of the others), and with 503 while Redis
 * is unreachable: the connection, or the store's shard (a Cluster master down or hanging refuses only the stores of
 * the shards it serves). Both carry Retry-After.
 */
export function createBackpressure(opts: BackpressureOptions): Backpressure {
  const intervalMs = opts.intervalMs ?? 250;
  const staleAfterMs = opts.staleAfterMs ?? 2_000;
  const n = opts.shards.length;
  /** Waiting jobs per shard as last read; undefined for a shard whose last read failed (or before the first). */
  const depths: Array<number | undefined> = new Array<number | undefined>(n).fill(undefined);
  const total = () => (depths.every((d) => d !== undefined) ? depths.reduce<number>((a, b) => a + b!, 0) : undefined);
  /**
   * When each shard was last read; the start counts as a read, so a fresh collector is not refused. Each shard on its
   * own: on a Redis Cluster with one master down only the stores of the shards it serves are refused.
   */
  let readAt = new Array<number>(n).fill(Date.now());
  const failed = new Array<boolean>(n).fill(false);
  let timer: NodeJS.Timeout | undefined;
  /** Each shard's read in flight: a shard whose master hangs holds back no other shard's read. */
  const inFlight = new Array<Promise<void> | undefined>(n).fill(undefined);
  /** Shards whose read began to fail, with the error's message, and shards readable again, not yet logged. */
  const newlyFailed = new Map<number, string>();
  const readableAgain = new Set<number>();

  const readShard = (shard: number) => {
    const pending = inFlight[shard];
    if (pending) return pending;
    const read = (async () => {
      try {
        depths[shard] = await opts.shards[shard]!.getWaitingCount();
        readAt[shard] = Date.now();
        if (failed[shard] && !newlyFailed.delete(shard)) readableAgain.add(shard);
        failed[shard] = false;
      } catch (err) {
        if (!failed[shard]) newlyFailed.set(shard, (err as Error)?.message ?? String(err));
        failed[shard] = true;
        depths[shard] = undefined;
      }
    })();
    // Cleared once settled (also when the read threw before its first await).
    inFlight[shard] = read.finally(() => (inFlight[shard] = undefined));
    return inFlight[shard];
  };
  /**
   * Logs the shards that began to fail, one line per distinct error with the shards it hit (every shard shares one
   * connection to a single Redis, so its outage is one line; on a Cluster a master down names the shards it serves),
   * and those readable again, in one line. An expected outage: its message, no stack.
   */
  const report = () => {
    const byCause = new Map<string, number[]>();
    for (const [shard, message] of [...newlyFailed].sort(([a], [b]) => a - b))
      byCause.set(message, [...(byCause.get(message) ?? []), shard]);
    for (const [message, shards] of byCause)
      opts.log?.warn({ shards, err: { message } }, "cannot read the events queue shards' depth; refusing their stores' events with 503");
    if (readableAgain.size > 0) {
      const shards = [...readableAgain].sort((a, b) => a - b);
      const depth = shards.reduce((sum, shard) => sum + (depths[shard] ?? 0), 0);
      opts.log?.info({ shards, depth }, 'events queue shards readable again');
    }
    newlyFailed.clear();
    readableAgain.clear();
  };
  const sample = async () => {
    await Promise.all(opts.shards.map((_, shard) => readShard(shard)));
    report();
  };

  /** The shard answered its last read, recently (a read older than staleAfterMs: Redis hangs). */
  const shardUp = (shard: number) => !failed[shard] && (timer === undefined || Date.now() - readAt[shard]! <= staleAfterMs);
  const redisUp = () => opts.redis.status === 'ready' && depths.some((_, shard) => shardUp(shard));

  return {
    get depth() {
      return total();
    },
    get redisUp() {
      return redisUp();
    },
    admit(store) {
      const shard = shardOfStore(store, n);
      if (opts.redis.status !== 'ready' || !shardUp(shard)) {
        throw new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', 'the events queue (Redis) is unreachable; nothing was accepted, retry later', {
          headers: { 'retry-after': String(REDIS_DOWN_RETRY_AFTER_SECONDS) },
        });
      }
      // The client's error for the same limit; the app answers it with a 429.
      const depth = depths[shard];
      if (depth !== undefined && depth > opts.maxDepth) throw new QueueFullError(depth, opts.maxDepth);
    },
    sample,
    start() {
      if (timer) return;
      readAt = readAt.map(() => Date.now());
      void sample();
      timer = setInterval(() => void sample(), intervalMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}
