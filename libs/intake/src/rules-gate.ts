import type { Redis } from 'ioredis';

/** How long an agreeing fingerprint is trusted before it is read again. */
const AGREE_CACHE_MS = 60_000;
/** How long a missing or other one is (the aggregators publish theirs at start: a fleet starting agrees soon). */
const DISAGREE_CACHE_MS = 1_000;

/**
 * Whether the aggregators' published rules fingerprint (libs/key-layout `rules`, at `key`) is `own`: read at most
 * once a minute while it is, once a second while it is not (none published yet, another one, or Redis not
 * answering). A fingerprint that differs is reported to `onDiffer` once per value: the caller's rules are not the
 * aggregators', and a batch it rolled up would be counted by the wrong rules.
 */
export function aggregatorRulesGate(
  redis: Pick<Redis, 'get'>,
  key: string,
  own: string,
  onDiffer: (theirs: string) => void,
): () => Promise<boolean> {
  let agree = false;
  let until = -Infinity;
  let told: string | undefined;
  return async () => {
    if (until > performance.now()) return agree;
    const theirs = await redis.get(key).catch(() => null);
    agree = theirs === own;
    until = performance.now() + (agree ? AGREE_CACHE_MS : DISAGREE_CACHE_MS);
    if (theirs !== null && !agree && theirs !== told) {
      told = theirs;
      onDiffer(theirs);
    }
    return agree;
  };
}
