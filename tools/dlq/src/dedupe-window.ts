import { redisKeys } from '@tally/key-layout';

/**
 * The window the replay guard uses: the aggregators' DEDUPE_WINDOW_SECONDS as they publish it in Redis (at start and
 * every 5 minutes; libs/key-layout `dedupeWindow`), since their dedupe records last that long; else, with none
 * published (no aggregator running), this tool's own. A published window other than the tool's is said once on `err`.
 */
export async function replayGuardWindowSeconds(
  redis: { get(key: string): Promise<string | null> },
  keyPrefix: string,
  own: number,
  err: (line: string) => void,
): Promise<number> {
  const published = Number((await redis.get(redisKeys(keyPrefix).dedupeWindow).catch(() => null)) ?? Number.NaN);
  if (!Number.isInteger(published) || published <= 0) return own;
  if (published !== own) {
    err(
      `tally: the aggregators' DEDUPE_WINDOW_SECONDS is ${published} (published in Redis), this tool's ${own}: replays are guarded with ${published}`,
    );
  }
  return published;
}
