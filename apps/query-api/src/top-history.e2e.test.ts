import { createDynamoClient } from '@tally/dynamo';
import { addDays, formatDate, localDate, redisKeys } from '@tally/key-layout';
import { closeQueues, createQueues, enqueue, QUEUE } from '@tally/queues';
import { issueKey } from '@tally/tenants';
import { metricValue, waitFor } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';

const stack = useStack({ tenants: ['S'] });

// TOP_HISTORY_DAYS end to end: the aggregator keeps the rankings that long and records it; the query API reaches back
// no further than both its own value and that record allow.
describe('TOP_HISTORY_DAYS', () => {
  it('an aggregator keeping 40 days and a query API told 200: rankings expire after 40 days, top lists reach back 38', async () => {
    const aggregator = await stack.startApp('bucket-aggregator', { env: { SEALER_ENABLED: 'false', TOP_HISTORY_DAYS: '40' } });
    const api = await stack.startApp('query-api', { env: { TOP_HISTORY_DAYS: '200' } });
    const queues = createQueues(stack.redis, { keyPrefix: 't', shards: 1 });
    stack.defer(() => closeQueues(queues));
    const client = createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' });
    stack.defer(() => client.destroy());
    const key = await issueKey({ dynamo: client, table: stack.table }, 'S', ['read'], 'top history');

    const now = Date.now();
    const events = [0, 1, 2].map((i) => ({ type: 'view', ts: now, dims: { product: `P${i}` } }));
    await enqueue(queues, QUEUE.events, { batchId: 'th-1', store: 'S', receivedAt: now, events });
    await waitFor(async () => metricValue(await aggregator.metrics(), 'tally_events_applied_total') === 3, {
      timeoutMs: 20_000,
      message: 'the batch applied',
    });
    const rankings = await stack.redis.keys('t:{S}:k:*');
    expect(rankings.length).toBeGreaterThan(0);
    for (const k of rankings) {
      const ttl = await stack.redis.ttl(k);
      expect(ttl).toBeGreaterThan(40 * 86_400 - 120);
      expect(ttl).toBeLessThanOrEqual(40 * 86_400);
    }
    // Recorded at start-up: 40 days kept since ever (the 100 days before were longer), 100 days no more.
    const history = await stack.redis.hgetall(redisKeys('t').topHistory);
    expect(history['40']).toBe('0');
    expect(Number(history['100'])).toBeGreaterThan(now - 60_000);

    const top = async (from: number) => {
      const today = localDate(Date.now(), 'UTC');
      const q = `entity=product&metric=ViewCount&from=${formatDate(addDays(today, -from))}&to=${formatDate(today)}`;
      const res = await fetch(`${api.url}/v1/top?${q}`, { headers: { authorization: `Bearer ${key}` } });
      return { status: res.status, body: (await res.json()) as { field?: string; detail?: string; items?: unknown[] } };
    };
    const refused = await top(50);
    expect(refused).toMatchObject({ status: 400, body: { field: 'from' } });
    expect(refused.body.detail).toMatch(/^top lists reach back 38 days, .*TOP_HISTORY_DAYS is or was lower/);
    const listed = await top(38);
    expect(listed.status).toBe(200);
    expect(listed.body.items).toHaveLength(3);
  }, 90_000);
});
