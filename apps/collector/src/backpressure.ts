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
  /** The waiting count of all events shards last read, undefined before the first read or after a failed one. */
  readonly depth: number | undefined;
  /** True when the connection is ready and Redis answered the last depth read, recently. */
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
 * is unreachable. Both carry Retry-After.
 */
export function createBackpressure(opts: BackpressureOptions): Backpressure {
  const intervalMs = opts.intervalMs ?? 250;
  const staleAfterMs = opts.staleAfterMs ?? 2_000;
  /** Waiting jobs per shard, as last read. */
  let depths: number[] | undefined;
  const total = () => depths?.reduce((a, b) => a + b, 0);
  let lastReadOk = true;
  /** When the depth was last read; the start counts as a read, so a fresh collector is not refused. */
  let readAt = Date.now();
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;

  const sample = () => {
    inFlight ??= (async () => {
      try {
        depths = await Promise.all(opts.shards.map((q) => q.getWaitingCount()));
        readAt = Date.now();
        if (!lastReadOk) opts.log?.info({ depth: total() }, 'events queue readable again');
        lastReadOk = true;
      } catch (err) {
        // An expected outage: its message, no stack.
        if (lastReadOk)
          opts.log?.warn(
            { err: { message: (err as Error)?.message ?? String(err) } },
            'cannot read the events queue depth; refusing events with 503',
          );
        lastReadOk = false;
        depths = undefined;
      } finally {
        inFlight = undefined;
      }
    })();
    return inFlight;
  };

  const redisUp = () => lastReadOk && opts.redis.status === 'ready' && (timer === undefined || Date.now() - readAt <= staleAfterMs);

  return {
    get depth() {
      return total();
    },
    get redisUp() {
      return redisUp();
    },
    admit(store) {
      if (!redisUp()) {
        throw new HttpProblem(503, 'TALLY_ERR_UNAVAILABLE', 'the events queue (Redis) is unreachable; nothing was accepted, retry later', {
          headers: { 'retry-after': String(REDIS_DOWN_RETRY_AFTER_SECONDS) },
        });
      }
      // The client's error for the same limit; the app answers it with a 429.
      const depth = depths?.[shardOfStore(store, depths.length)];
      if (depth !== undefined && depth > opts.maxDepth) throw new QueueFullError(depth, opts.maxDepth);
    },
    sample,
    start() {
      if (timer) return;
      readAt = Date.now();
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
