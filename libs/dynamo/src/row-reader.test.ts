import type { BatchGetItemCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { createDynamoMeter, getItems, RetryableReadError } from './index';

/**
 * A client whose BatchGetItem reads `processed` keys of a call (none by default), or all of them on every `every`-th
 * call, and leaves the rest unprocessed.
 */
function throttled(processed = 0, every = Infinity) {
  const calls: number[] = [];
  const client = {
    send: async (cmd: BatchGetItemCommand) => {
      const keys = cmd.input.RequestItems!['t']!.Keys!;
      calls.push(keys.length);
      const n = calls.length % every === 0 ? keys.length : processed;
      const left = keys.slice(n);
      return { Responses: { t: keys.slice(0, n) }, UnprocessedKeys: left.length > 0 ? { t: { Keys: left } } : {} };
    },
  } as unknown as DynamoDBClient;
  const pauses: number[] = [];
  const deps = { client, table: 't', meter: createDynamoMeter(), sleep: async (ms: number) => void pauses.push(ms) };
  return { deps, calls, pauses };
}

const keys = (n: number) => Array.from({ length: n }, (_, i) => ({ pk: `S#product#P${i}`, sk: 'TOTAL' }));

describe('getItems under throttling', () => {
  it('retries unprocessed keys within one budget of pauses for the whole read, then throws RetryableReadError', async () => {
    // One chunk never processed: nine tries, as before, with the same pauses (4.55 s).
    const never = throttled();
    await expect(getItems(never.deps, keys(100))).rejects.toThrow(RetryableReadError);
    expect(never.calls).toHaveLength(9);
    expect(never.pauses).toEqual([50, 100, 200, 400, 800, 1000, 1000, 1000]);
    // 2,000 keys (20 chunks), each read only at its ninth try: the second chunk's pauses pass the budget, where nine
    // tries of each chunk in turn took 20 x 4.55 s.
    const ninth = throttled(0, 9);
    await expect(getItems(ninth.deps, keys(2_000))).rejects.toThrow('BatchGetItem left 100 keys unprocessed after 4900 ms of retries');
    expect(ninth.calls).toHaveLength(13);
  });

  it('shares the budget among the chunks and rounds: many chunks each retried once end the read once their pauses reach it', async () => {
    // Half of each 100 keys read per call: every chunk takes two calls and one 50 ms pause.
    const some = throttled(50);
    expect((await getItems(some.deps, keys(2_000))).items.size).toBe(2_000);
    expect(some.pauses).toEqual(Array(20).fill(50));
    // 200 chunks: the first 100 use the 5 s of pauses, and the 101st is not retried.
    const many = throttled(50);
    await expect(getItems(many.deps, keys(20_000))).rejects.toThrow('BatchGetItem left 50 keys unprocessed after 5000 ms of retries');
    expect(many.calls).toHaveLength(201);
  });
});
