import { DEMO_STORES, everyBucketRules, expectedCounts, startFleet, checkTable, waitForDrain, type Fleet } from '@tally/loadgen';
import { QUEUE_NAMES } from '@tally/queues';
import type { EventInput } from '@tally/schema';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// A flush job whose writer is SIGKILLed mid-flush twice in a row stalls twice. It must be retried (flushes are
// idempotent by watermark), not failed: a failed flush job also strands its row, because every later flush of the
// row gets the same deterministic job id, which BullMQ ignores while the failed job exists.
let fleet: Fleet;
const store = DEMO_STORES[2]!;

beforeAll(async () => {
  fleet = await startFleet({ stores: [store], rules: everyBucketRules() });
}, 120_000);
afterAll(async () => {
  await fleet?.stop();
});

describe('a flush job stalled twice', () => {
  it('is retried and written exactly once, never failed', async () => {
    const writer = fleet.app('dynamo-writer');
    const crash = { TALLY_CRASH_POINT: 'writer:after-update' };
    await writer.restart(crash);
    const events: EventInput[] = [
      { type: 'view', ts: Date.now() - 60_000, dims: { product: 'P1', visitor: 'V1' } },
      { type: 'order', ts: Date.now() - 60_000, dims: { visitor: 'V1' }, value: '12.34' },
    ];
    const res = await fetch(`${fleet.app('collector').url}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${fleet.keys[store.id]!.ingest}` },
      body: JSON.stringify(events),
    });
    expect(res.status).toBe(202);
    for (let i = 0; i < 2; i++) {
      expect((await writer.handle.process.exited).signal).toBe('SIGKILL'); // crashed after its first UpdateItem
      // The next writer finds the job stalled (its lock expired with the crashed process) and runs it again.
      await writer.restart(i === 0 ? crash : { TALLY_CRASH_POINT: undefined });
    }
    // Before the fix this timed out with the row still dirty: its flush job sat in the failed set.
    await waitForDrain(fleet, { timeoutMs: 45_000 });
    for (const name of QUEUE_NAMES) expect([name, await fleet.queues[name].getFailedCount()]).toEqual([name, 0]);
    const check = await checkTable(fleet, expectedCounts([{ store: store.id, events }], fleet.rules, fleet.zones));
    expect(check.samples).toEqual([]);
    expect(check.cells).toBeGreaterThan(10);
  }, 120_000);
});
