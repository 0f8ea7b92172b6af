import { publishedWindowSeconds } from '@tally/key-layout';
import type { Redis } from 'ioredis';

/** How long a read of the published window is trusted before it is read again. */
const WINDOW_CACHE_MS = 60_000;
/** How long a read Redis did not answer is (the fallback meanwhile). */
const FAILED_READ_CACHE_MS = 1_000;

export interface DedupeWindow {
  /** The window in seconds: the published one (read at most once a minute), else the fallback. */
  get(): Promise<number>;
  /** The last window `get` found (the fallback before any), without reading: for an error path. */
  last(): number;
}

/**
 * The aggregators' DEDUPE_WINDOW_SECONDS as they publish it at `key` (libs/key-layout `dedupeWindow`, every 5 minutes,
 * expiring after 10; the dlq tool's replay guard reads the same), else `fallback` (the caller's own setting): none
 * published (no aggregator running), no `key`, or Redis not answering. Read at most once a minute (once a second
 * while Redis does not answer), one read at a time (calls that find it stale share it).
 */
export function dedupeWindow(redis: Pick<Redis, 'get'>, key: string | undefined, fallback: number): DedupeWindow {
  let seconds = fallback;
  let until = -Infinity;
  let reading: Promise<number> | undefined;
  const read = async () => {
    let answered = true;
    seconds = publishedWindowSeconds(await redis.get(key!).catch(() => ((answered = false), null))) ?? fallback;
    until = performance.now() + (answered ? WINDOW_CACHE_MS : FAILED_READ_CACHE_MS);
    reading = undefined;
    return seconds;
  };
  return {
    get: async () => (key === undefined || until > performance.now() ? seconds : (reading ??= read())),
    last: () => seconds,
  };
}
