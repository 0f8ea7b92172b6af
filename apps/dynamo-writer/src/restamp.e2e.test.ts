import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoClient } from '@tally/dynamo';
import { EXPIRES_ATTR } from '@tally/key-layout';
import { closeQueues, createQueues, QUEUE, scheduleRetentionRestamp } from '@tally/queues';
import { changeTenant, createTenant, RETENTION_SETTLE_MS } from '@tally/tenants';
import { createTestTable, metricValue, waitFor } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';

// The dynamo-writer process runs the restamps queued on the maintenance queue (main.ts): a job queued while no writer
// ran (it waits in Redis) is run once one starts. The change is dated RETENTION_SETTLE_MS back (an injected clock), so
// the job is due at once.

const stack = useStack();

describe('dynamo writer process', () => {
  it("restamps a store's visitor items after a change of its retention, from the maintenance queue", async () => {
    const table = await createTestTable(stack.dynalite.endpoint);
    const db = { dynamo: createDynamoClient({ endpoint: stack.dynalite.endpoint, region: 'us-east-1' }), table };
    stack.defer(async () => db.dynamo.destroy());
    const queues = createQueues(stack.redis, { keyPrefix: 'wrs', shards: 1 });
    stack.defer(() => closeQueues(queues));
    const d = new Date();
    const month = { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1 };
    const sk = `M${month.year}-${String(month.month).padStart(2, '0')}`;
    const expiry = (months: number) => Date.UTC(month.year, month.month - 1 + months, 2) / 1000;
    await createTenant(db, 'RE', { historyMonths: 6 });
    await db.dynamo.send(
      new PutItemCommand({
        TableName: table,
        Item: { pk: { S: 'RE#visitor#V1' }, sk: { S: sk }, v: { N: '1' }, [EXPIRES_ATTR]: { N: String(expiry(6)) } },
      }),
    );
    const changedAt = Date.now() - RETENTION_SETTLE_MS;
    await changeTenant(
      db,
      'RE',
      { historyMonths: 24 },
      { now: () => changedAt, restamp: (at) => scheduleRetentionRestamp(queues, 'RE', at, 0) },
    );
    expect(await queues[QUEUE.maintenance].count()).toBe(1); // due now, waiting for a writer

    const writer = await stack.startApp('dynamo-writer', { env: { DYNAMODB_TABLE: table, KEY_PREFIX: 'wrs' } });
    const stamp = async () =>
      ((await db.dynamo.send(new ScanCommand({ TableName: table, ConsistentRead: true }))).Items ?? [])
        .filter((i) => i['pk']!.S === 'RE#visitor#V1')
        .map((i) => Number(i[EXPIRES_ATTR]!.N))[0];
    await waitFor(async () => (await stamp()) === expiry(24), { timeoutMs: 30_000, message: 'the item restamped' });
    const metrics = await (await fetch(`${writer.url}/metrics`)).text();
    expect(metricValue(metrics, 'tally_retention_restamps_total', { outcome: 'done', app: 'dynamo-writer' })).toBe(1);
    expect(metricValue(metrics, 'tally_retention_restamped_items_total', { app: 'dynamo-writer' })).toBe(1);
    expect(metrics).toContain('tally_jobs_failed_total{queue="maintenance",app="dynamo-writer"} 0');
    // Done and gone (completed jobs are not kept), none failed.
    const counts = () => queues[QUEUE.maintenance].getJobCounts('completed', 'delayed', 'waiting', 'active', 'failed');
    await waitFor(async () => Object.values(await counts()).every((n) => n === 0), { timeoutMs: 5_000, message: 'the job done' });
    await writer.stop();
  });
});
