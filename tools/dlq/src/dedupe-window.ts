import { redisKeys } from '@tally/key-layout';

/**
 * The replay guard's window: the aggregators' DEDUPE_WINDOW_SECONDS as they publish it in Redis (libs/key-layout
 * `dedupeWindow`), their dedupe records last that long; with none published, this tool's own (a difference is said).
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
