import { createDynamoClient } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { loadRules } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import { appArgs, metricValue, REPO_ROOT, startProcess, sumOfJobRows, type AppHandle } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { beforeAll, describe, expect, it } from 'vitest';

const stack = useStack();
let collector: AppHandle;
let key: string;
let queues: TallyQueues;

beforeAll(async () => {
  const dynamo = createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table: stack.table });
  await admin.createTenant('E2E1', { timeZone: 'America/Sao_Paulo' });
  key = await admin.issueKey('E2E1', ['ingest'], 'e2e');
  dynamo.destroy();
  // The aggregators' rules fingerprint as they publish it (none runs here): the collector then rolls batches up.
  await stack.redis.set(redisKeys('t').rules, loadRules().fingerprint);
  collector = await stack.startApp('collector', { env: { LOG_LEVEL: 'info' } });
  queues = createQueues(stack.redis);
  stack.defer(() => closeQueues(queues));
});

const send = (body: string, contentType = 'application/json', headers: Record<string, string> = {}) =>
  fetch(`${collector.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': contentType, ...headers },
    body,
  });

describe('collector process', () => {
  it('takes events over HTTP and enqueues them for the store of the key', async () => {
    const ts = new Date(Date.now() - 5_000).toISOString();
    const events = Array.from({ length: 250 }, (_, i) => ({ type: 'view', ts, dims: { product: `P${i % 7}`, visitor: `V${i}` } }));
    const r1 = await send(JSON.stringify(events));
    expect(r1.status).toBe(202);
    const b1 = (await r1.json()) as { accepted: number; batchId: string };
    expect(b1.accepted).toBe(250);

    const nd = `${JSON.stringify({ type: 'order', ts, value: '42.50', dims: { visitor: 'V1' } })}\n${JSON.stringify({ type: 'page_view', ts })}\n`;
    const r2 = await send(nd, 'application/x-ndjson', { 'idempotency-key': 'e2e-order-1' });
    const r3 = await send(nd, 'application/x-ndjson', { 'idempotency-key': 'e2e-order-1' });
    expect([r2.status, r3.status]).toEqual([202, 202]);
    const b2 = (await r2.json()) as { batchId: string };
    expect(((await r3.json()) as { batchId: string }).batchId).toBe(b2.batchId);

    expect(await queues.events.getWaitingCount()).toBe(2);
    const job = await queues.events.getJob(b1.batchId);
    expect(job?.data.store).toBe('E2E1');
    expect(job?.data.count).toBe(250);
    expect(sumOfJobRows(job?.data.rows, 'E2E1', 'v')).toBe(250n);
    const orderRows = (await queues.events.getJob(b2.batchId))?.data.rows;
    expect([sumOfJobRows(orderRows, 'E2E1', 'o'), sumOfJobRows(orderRows, 'E2E1', 'r'), sumOfJobRows(orderRows, 'E2E1', 'pg')]).toEqual([
      1n,
      4250n,
      1n,
    ]);

    const bad = await send('[{"type":"view","ts":"yesterday","dims":{"product":"P1"}}]');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { errors: unknown[] }).errors).toEqual([
      { index: 0, field: 'ts', reason: expect.stringMatching(/^must be an ISO-8601 timestamp/) },
    ]);

    const metrics = await collector.metrics();
    expect(metricValue(metrics, 'tally_events_received_total')).toBe(250 + 2 + 2 + 1);
    expect(metricValue(metrics, 'tally_events_accepted_total')).toBe(250 + 2 + 2);
    expect(metricValue(metrics, 'tally_events_rejected_total', { reason: 'ts' })).toBe(1);
    expect(metricValue(metrics, 'tally_queue_jobs', { queue: 'events', state: 'waiting' })).toBe(2);
    expect((await fetch(`${collector.url}/readyz`)).status).toBe(200);
  });

  it('shuts down cleanly on SIGTERM', async () => {
    const exit = await collector.process.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(collector.process.output()).toMatch(/"msg":"shutdown complete"/);
    expect(collector.process.output()).not.toContain(key);
  });

  it('refuses to start with a bad variable, naming it', async () => {
    const p = await startProcess(process.execPath, appArgs('collector', 'bundle'), {
      cwd: REPO_ROOT,
      env: { REDIS_URL: stack.redisServer.url, MAX_EVENTS_PER_REQUEST: 'lots' },
    });
    expect((await p.exited).code).toBe(1);
    expect(p.output()).toContain('tally: configuration error: MAX_EVENTS_PER_REQUEST: expected a number; got "lots"');
  });
});
