import { QueueFullError } from '@tally/intake';
import { shardOfStore } from '@tally/queues';
import { describe, expect, it } from 'vitest';
import { createBackpressure } from './backpressure';

/** Fake events shards with fixed waiting counts; `reads` counts the reads of each. */
function shards(waiting: number[]) {
  const reads = waiting.map(() => 0);
  const queues = waiting.map((n, i) => ({
    getWaitingCount: async () => {
      reads[i]!++;
      return n;
    },
  }));
  return { queues, reads };
}

/** A store id whose events shard (of `count`) is `shard`, as the enqueue maps it. */
const storeOn = (shard: number, count: number) =>
  Array.from({ length: 100 }, (_, i) => `STORE${i}`).find((s) => shardOfStore(s, count) === shard)!;

const ready = { status: 'ready' };

describe('createBackpressure', () => {
  it("refuses a store only for its own shard's depth: a backlog in another shard does not refuse it", async () => {
    const { queues, reads } = shards([0, 6]);
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5 });
    await bp.sample();
    expect(reads).toEqual([1, 1]); // one read per shard per poll, none per request
    expect(bp.depth).toBe(6);
    const quiet = storeOn(0, 2);
    const noisy = storeOn(1, 2);
    expect(() => bp.admit(quiet)).not.toThrow();
    let err: unknown;
    try {
      bp.admit(noisy);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(QueueFullError);
    expect(err).toMatchObject({ depth: 6, limit: 5 });
    expect(reads).toEqual([1, 1]);
  });

  it('with one shard, refuses every store while the queue is over the limit', async () => {
    const { queues } = shards([6]);
    const bp = createBackpressure({ shards: queues, redis: ready, maxDepth: 5 });
    await bp.sample();
    for (const store of ['A', 'B', 'SHOP1']) expect(() => bp.admit(store)).toThrow(QueueFullError);
    const under = createBackpressure({ shards: shards([5]).queues, redis: ready, maxDepth: 5 });
    await under.sample();
    expect(() => under.admit('A')).not.toThrow();
  });
});
