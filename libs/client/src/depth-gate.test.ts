import { QueueFullError } from '@tally/intake';
import { shardOfStore } from '@tally/queues';
import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { depthGate } from './client';

/** A store id whose events shard (of `count`) is `shard`, as the enqueue maps it. */
const storeOn = (shard: number, count: number) =>
  Array.from({ length: 100 }, (_, i) => `STORE${i}`).find((s) => shardOfStore(s, count) === shard)!;

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:7001'), { code: 'ECONNREFUSED' });

describe('depthGate', () => {
  it("a shard Redis does not answer (a Cluster master down) refuses only its own stores, not the other shards'", async () => {
    let down = true;
    const reads = [0, 0];
    const shards = [
      {
        getWaitingCount: async () => {
          reads[0]!++;
          return 0;
        },
      },
      {
        getWaitingCount: async () => {
          reads[1]!++;
          if (down) throw refused;
          return 3;
        },
      },
    ] as unknown as Queue[];
    const gate = depthGate(shards, { maxDepth: 2, checkEveryMs: 0 });
    const [up, off] = [storeOn(0, 2), storeOn(1, 2)];
    await expect(gate(up)).resolves.toBeUndefined();
    await expect(gate(off)).rejects.toBe(refused);
    expect(reads).toEqual([1, 1]); // each call reads its own store's shard only
    down = false;
    await expect(gate(off)).rejects.toBeInstanceOf(QueueFullError);
    await expect(gate(up)).resolves.toBeUndefined();
  });
});
