import { createDynamoClient } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { closeQueues, createQueues, enqueue, QUEUE } from '@tally/queues';
import { issueKey } from '@tally/tenants';
import { clockShiftEnv, metricValue, waitFor } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';

const stack = useStack({ tenants: ['S'] });

// The tombstones of an erasure last the aggregators' DEDUPE_WINDOW_SECONDS, which they publish in Redis
// (`<p>:dedupe-window`), when it is longer than the query API's own: the aggregators apply a batch up to their window
// after its acceptance, so a batch accepted before the erasure and applied after the query API's window (a queue
// backlog), still inside theirs, must find the tombstone.
describe("an erasure on a query API whose DEDUPE_WINDOW_SECONDS is shorter than the aggregators'", () => {
  it("keeps the erased visitor's batches accepted before the erasure out for as long as the aggregators apply them", async () => {
    const WINDOW = 3_600; // the aggregators'
    const first = await stack.startApp('bucket-aggregator', { env: { SEALER_ENABLED: 'false', DEDUPE_WINDOW_SECONDS: String(WINDOW) } });
    const apiLines: string[] = [];
    const api = await stack.startApp('query-api', { env: { DEDUPE_WINDOW_SECONDS: '60' }, onLine: (line) => apiLines.push(line) });
    const queues = createQueues(stack.redis, { keyPrefix: 't', shards: 1 });
    stack.defer(() => closeQueues(queues));
    const client = createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' });
    stack.defer(() => client.destroy());
    const db = { dynamo: client, table: stack.table };
    const admin = await issueKey(db, 'S', ['admin'], 'admin');
    const read = await issueKey(db, 'S', ['read'], 'read');
    expect(await stack.redis.get(redisKeys('t').dedupeWindow)).toBe(String(WINDOW));

    const view = (ts: number) => [{ type: 'view', ts, dims: { product: 'P1', visitor: 'V1' } }];
    await enqueue(queues, QUEUE.events, { batchId: 'w-1', store: 'S', receivedAt: Date.now(), events: view(Date.now()) });
    await waitFor(async () => metricValue(await first.metrics(), 'tally_events_applied_total') === 1, {
      timeoutMs: 60_000,
      message: 'the first batch applied',
    });
    await first.kill();

    // A batch of V1 accepted a second before the erasure, still queued when it is made (a backlog).
    const erasedAt = Date.now();
    await enqueue(queues, QUEUE.events, { batchId: 'w-2', store: 'S', receivedAt: erasedAt - 1_000, events: view(erasedAt - 1_000) });
    const erased = await fetch(`${api.url}/v1/visitors/V1`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
    expect(erased.status).toBe(200);

    // The backlog is worked through 400 s after the erasure: well inside the aggregators' 3,600 s window. The shift
    // is added to this process's own (`npm run test:at` shifts every clock; clockShiftEnv replaces a shift).
    const ownShiftMs = Number(process.env['TALLY_TEST_CLOCK_OFFSET_MS'] ?? 0);
    const later = await stack.startApp('bucket-aggregator', {
      name: 'bucket-aggregator (400 s later)',
      env: { SEALER_ENABLED: 'false', DEDUPE_WINDOW_SECONDS: String(WINDOW), ...clockShiftEnv(ownShiftMs + 400_000) },
    });
    await waitFor(
      async () => {
        const m = await later.metrics();
        return (metricValue(m, 'tally_batches_dropped_total') ?? 0) + (metricValue(m, 'tally_batches_applied_total') ?? 0) >= 1;
      },
      { timeoutMs: 60_000, message: 'the queued batch processed' },
    );
    const totals = await fetch(`${api.url}/v1/totals?entity=visitor&ids=V1&metrics=ViewCount&range=allTime`, {
      headers: { authorization: `Bearer ${read}` },
    });
    const body = (await totals.json()) as { items: Array<{ id: string; values: Record<string, number> }> };
    // Not counted again: the tombstone lasts the 3,600 s the aggregators apply a batch in, not the query API's 60 s.
    expect(body.items[0]).toMatchObject({ id: 'V1', values: { ViewCount: 0 } });
    // And the query API says the windows differ.
    expect(apiLines.filter((line) => line.includes("the aggregators' DEDUPE_WINDOW_SECONDS is 3600"))).toHaveLength(1);
  }, 240_000);
});
