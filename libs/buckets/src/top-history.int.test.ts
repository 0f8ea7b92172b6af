import { redisKeys } from '@tally/key-layout';
import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RANK_TTL_DAYS } from './bucket-store';
import { readTopHistory, recordTopHistory } from './top-history';

let redis: Redis;
useRedis((r) => void (redis = r));

const DAY_MS = 86_400_000;
/** A top history: how many days the daily rankings were kept, and since when (0: since ever). */
const kept = (...since: Array<[days: number, at: number]>) => new Map(since);

describe('the top history (how long the aggregators kept the daily rankings)', () => {
  it('starts from the rankings kept RANK_TTL_DAYS days since ever, and follows raises and cuts', async () => {
    const key = redisKeys('th').topHistory;
    expect(RANK_TTL_DAYS).toBe(100);
    // No record yet: every aggregator before TOP_HISTORY_DAYS kept them 100 days.
    expect(await readTopHistory(redis, key)).toEqual(kept([100, 0]));
    const t = Date.parse('2024-04-25T12:00:00Z');
    expect(await recordTopHistory(redis, key, 100, t)).toBe(1);
    expect(await recordTopHistory(redis, key, 100, t + 300_000)).toBe(0);
    expect(await redis.hgetall(key)).toEqual({ '100': '0' });

    // Raised to 200: kept that long only from now on; said again later, the time stays.
    expect(await recordTopHistory(redis, key, 200, t + DAY_MS)).toBe(1);
    expect(await recordTopHistory(redis, key, 200, t + 2 * DAY_MS)).toBe(0);
    expect(await readTopHistory(redis, key)).toEqual(kept([100, 0], [200, t + DAY_MS]));

    // Cut to 40 (or an aggregator keeping 40 beside them): nothing is kept 100 or 200 days from now on; 40 days has
    // been kept since ever (every aggregator kept them longer).
    expect(await recordTopHistory(redis, key, 40, t + 3 * DAY_MS)).toBe(3);
    expect(await readTopHistory(redis, key)).toEqual(kept([100, t + 3 * DAY_MS], [200, t + 3 * DAY_MS], [40, 0]));
    // While it runs, it says so again: the longer retentions move on with it.
    expect(await recordTopHistory(redis, key, 40, t + 4 * DAY_MS)).toBe(2);
    expect(await readTopHistory(redis, key)).toEqual(kept([100, t + 4 * DAY_MS], [200, t + 4 * DAY_MS], [40, 0]));

    // Back to 150 (the 40 days' aggregator said so last at t + 4 days): kept 150 days from then on; 200 still not.
    expect(await recordTopHistory(redis, key, 150, t + 5 * DAY_MS)).toBe(2);
    expect(await readTopHistory(redis, key)).toEqual(kept([100, t + 4 * DAY_MS], [200, t + 5 * DAY_MS], [40, 0], [150, t + 4 * DAY_MS]));
  });

  it('takes an installation that never kept 100 days as one that did (nothing older than its first record exists)', async () => {
    const key = redisKeys('fresh').topHistory;
    const t = Date.parse('2024-06-01T00:00:00Z');
    await recordTopHistory(redis, key, 31, t);
    expect(await readTopHistory(redis, key)).toEqual(kept([100, t], [31, 0]));
  });

  it('refuses days that are not a positive integer, writing nothing', async () => {
    const key = redisKeys('bad').topHistory;
    await expect(recordTopHistory(redis, key, 0, Date.now())).rejects.toThrow(/TALLY_ERR_ARGUMENT/);
    await expect(recordTopHistory(redis, key, 1.5, Date.now())).rejects.toThrow(/TALLY_ERR_ARGUMENT/);
    expect(await redis.exists(key)).toBe(0);
  });
});
