import {
  checkQueryApi,
  checkTable,
  DEMO_STORES,
  everyBucketRules,
  expectedCounts,
  loadFleet,
  startFleet,
  waitForDrain,
  type Fleet,
} from '@tally/loadgen';
import { QUEUE_NAMES, queueShards } from '@tally/queues';
import { afterAll, describe, expect, it } from 'vitest';

// KEY_PREFIX isolates installations: two fleets on one Redis, with the same store ids, each counts exactly its own
// traffic. Before the queues took their prefix from KEY_PREFIX, both fleets' workers took each other's batches.
const fleets: Fleet[] = [];
afterAll(async () => {
  for (const f of fleets.reverse()) await f.stop().catch(() => undefined);
});

describe('two installations on one Redis', () => {
  it('with different KEY_PREFIX each count exactly their own events (queues included)', async () => {
    const a = await startFleet({ stores: DEMO_STORES, rules: everyBucketRules(), prefix: 'one', queueShards: 2 });
    fleets.push(a);
    const b = await startFleet({ stores: DEMO_STORES, rules: everyBucketRules(), prefix: 'two', redis: a.redis });
    fleets.push(b);
    expect(b.redis.url).toBe(a.redis.url);

    const runOn = (f: Fleet, seed: number) =>
      loadFleet(f, {
        load: { seed, products: 40, visitors: 200, maxEvents: 2_500, batchSize: [10, 60], lateShare: 0.1, badShare: 0.02 },
        clientShare: 0.4,
        concurrency: 4,
        duplicateShare: 0.1,
      });
    const [ra, rb] = [runOn(a, 11), runOn(b, 22)];
    await Promise.all([ra.done, rb.done]);
    expect(ra.stats.accepted).toBeGreaterThan(2_000);
    expect(rb.stats.accepted).toBeGreaterThan(2_000);

    for (const [f, r] of [
      [a, ra],
      [b, rb],
    ] as const) {
      await waitForDrain(f, { timeoutMs: 120_000 });
      const expected = expectedCounts(r.accepted, f.rules, f.zones);
      const table = await checkTable(f, expected);
      expect([f.prefix, table.samples]).toEqual([f.prefix, []]);
      expect(table.mismatches).toBe(0);
      expect(table.cells).toBeGreaterThan(500);
      const query = await checkQueryApi(f, f.app('query-api').url, expected, { products: 5, visitors: 2 });
      expect([f.prefix, query.mismatches]).toEqual([f.prefix, []]);
      for (const name of QUEUE_NAMES)
        for (const q of queueShards(f.queues, name)) expect([f.prefix, name, await q.getFailedCount()]).toEqual([f.prefix, name, 0]);
    }
    // Every BullMQ key of each installation is under its own hash-tag prefix; nothing under the old shared `bull:`.
    const keys = await a.inspect.keys('*');
    expect(keys.filter((k) => k.startsWith('bull:'))).toEqual([]);
    expect(keys.some((k) => k.startsWith('{one:events:1}:events:'))).toBe(true);
    expect(keys.some((k) => k.startsWith('{two:events:0}:events:'))).toBe(true);
  }, 400_000);
});
