import { redisKeys } from '@tally/key-layout';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replayGuardWindowSeconds } from './dedupe-window';

let server: RedisHandle;
let redis: Redis;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url);
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

describe('the replay guard window', () => {
  it("is the aggregators' published DEDUPE_WINDOW_SECONDS, said when it is not the tool's; the tool's own while none is", async () => {
    const said: string[] = [];
    const guard = (own: number) => replayGuardWindowSeconds(redis, 't', own, (l) => said.push(l));
    expect(await guard(86_400)).toBe(86_400); // no aggregator has published one
    await redis.set(redisKeys('t').dedupeWindow, '3600');
    expect(await guard(3_600)).toBe(3_600);
    expect(said).toEqual([]);
    // The tool left at the default while the aggregators run a 1 h window: a batch replayed 2 h after it was applied
    // would count twice; the guard uses theirs.
    expect(await guard(86_400)).toBe(3_600);
    expect(said).toEqual([
      "tally: the aggregators' DEDUPE_WINDOW_SECONDS is 3600 (published in Redis), this tool's 86400: replays are guarded with 3600",
    ]);
    await redis.set(redisKeys('t').dedupeWindow, 'garbage');
    expect(await guard(86_400)).toBe(86_400);
    // Another installation's prefix reads its own key.
    expect(await replayGuardWindowSeconds(redis, 'other', 600, () => {})).toBe(600);
  });
});
