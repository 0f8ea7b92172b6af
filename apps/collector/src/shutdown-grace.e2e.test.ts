import { createDynamoClient } from '@tally/dynamo';
import { closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { createTenantAdmin } from '@tally/tenants';
import { waitFor, type AppHandle } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { beforeAll, describe, expect, it } from 'vitest';

// SIGTERM while a request is still in its enqueue: Redis holds the batch, the wait for replicas has not answered. The
// collector must let the request finish (its answer names the Idempotency-Key it was given, to retry with), not cut
// it after a fixed 5 s: the caller would never learn the key, and a retry would count the batch twice.

const stack = useStack();
let collector: AppHandle;
let key: string;
let queues: TallyQueues;
const WAIT_MS = 6_000;

beforeAll(async () => {
  const dynamo = createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table: stack.table });
  await admin.createTenant('GRACE1');
  key = await admin.issueKey('GRACE1', ['ingest'], 'shutdown grace');
  dynamo.destroy();
  // The test's redis-server has no replica: every wait for one lasts REDIS_WAIT_TIMEOUT_MS, then answers 503.
  collector = await stack.startApp('collector', {
    from: 'sources',
    env: { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: String(WAIT_MS), LOG_LEVEL: 'info' },
  });
  queues = createQueues(stack.redis);
  stack.defer(() => closeQueues(queues));
});

describe('collector shutdown', () => {
  it('answers a request whose enqueue outlasts 5 s before it exits', async () => {
    const started = Date.now();
    const answer = fetch(`${collector.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify([{ type: 'view', ts: new Date().toISOString(), dims: { product: 'P1' } }]),
    });
    answer.catch(() => undefined);
    // The batch is in Redis: the request now waits for the replica.
    await waitFor(async () => (await queues.events.getWaitingCount()) === 1, { message: 'the batch in Redis' });
    const exit = collector.process.kill('SIGTERM', { timeoutMs: 30_000 });

    const res = await answer;
    const answeredAt = Date.now();
    expect(answeredAt - started).toBeGreaterThanOrEqual(WAIT_MS - 500);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { code: string; idempotencyKey?: string };
    expect(body.code).toBe('TALLY_ERR_REDIS_REPLICAS_BEHIND');
    expect(body.idempotencyKey).toMatch(/^auto-/);
    expect(await exit).toEqual({ code: 0, signal: null });
    // Its keep-alive connection is closed once it is answered: the shutdown does not wait out the grace.
    expect(Date.now() - answeredAt).toBeLessThan(5_000);
  });
});
