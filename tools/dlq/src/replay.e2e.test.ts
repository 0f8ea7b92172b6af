import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BucketStore } from '@tally/buckets';
import { createTallyClient, UnknownStoreError } from '@tally/client';
import { createDynamoClient, createDynamoMeter, getItem, type RowReaderDeps } from '@tally/dynamo';
import { dayAttr, localDate, monthSk } from '@tally/key-layout';
import { closeQueues, createQueues, enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { createTenant } from '@tally/tenants';
import { metricValue, waitFor, waitForQueuesIdle, type AppHandle } from '@tally/testing';
import { useStack } from '@tally/testing/vitest';
import { Worker, type Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { runDlqCli } from './cli';

// Replaying dead letters against the real apps (started as processes): a replay is idempotent, so an operator
// can replay whatever is in the failed set without checking first whether it was already applied or written.

const PREFIX = 'dlq';
const stack = useStack({ tenants: ['S', 'T'] });
let queues: TallyQueues;
let dynamo: RowReaderDeps;
let aggregator: AppHandle;
let writer: AppHandle;
let env: Record<string, string>;
let buckets: BucketStore;

stack.defer(() => closeQueues(queues));
stack.defer(() => dynamo.client.destroy());

beforeAll(async () => {
  const { redis, dynalite, table } = stack;
  queues = createQueues(redis, { keyPrefix: PREFIX, shards: 1 });
  dynamo = { client: createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' }), table, meter: createDynamoMeter() };
  // Every row flushed after every bucket, so counts reach DynamoDB within seconds.
  const rules = structuredClone(defaultRules) as { entities: Record<string, { flush: unknown }> };
  for (const e of Object.values(rules.entities)) e.flush = { kind: 'bucket' };
  const rulesFile = join(mkdtempSync(join(tmpdir(), 'tally-dlq-rules-')), 'rules.json');
  writeFileSync(rulesFile, JSON.stringify(rules));
  buckets = new BucketStore({ redis, rules: compileRules(rules), prefix: PREFIX });
  // Under stack.env (REDIS_URL, DYNAMODB_ENDPOINT, DYNAMODB_TABLE).
  env = { BUCKET_SECONDS: '1', JOB_LOCK_MS: '2000', KEY_PREFIX: PREFIX, RULES_FILE: rulesFile };
});

const batch = (batchId: string, store: string, n: number) => {
  const ts = Date.now();
  return { batchId, store, receivedAt: ts, events: Array.from({ length: n }, () => ({ type: 'view', ts, dims: { product: 'P1' } })) };
};

/** A job in the failed set as a dead letter lands there: a worker fails it on its only attempt. */
async function deadLetter(queue: Queue, data: Record<string, unknown>, jobId: string, reason: string): Promise<void> {
  await queue.add(queue.name, data, { jobId, attempts: 1 });
  const connection = new Redis(stack.redisServer.url, { maxRetriesPerRequest: null });
  const worker = new Worker(
    queue.name,
    async () => {
      throw new Error(reason);
    },
    { connection, prefix: queue.opts.prefix },
  );
  try {
    await waitFor(async () => (await queue.getJobState(jobId)) === 'failed', { message: `${jobId} in the failed set` });
  } finally {
    await worker.close();
    await connection.quit();
  }
}

const views = async (pk: string) => (await getItem(dynamo, pk, 'TOTAL'))?.attrs.get('v');
const outboxEmpty = async (store: string) => (await stack.redis.keys(`${PREFIX}:{${store}}:o:*`)).length === 0;

async function replay(queue: string, id: string): Promise<string[]> {
  const out: string[] = [];
  const code = await runDlqCli(
    ['replay', queue, id],
    { queues, dedupeWindowMs: 86_400_000 },
    { out: (l) => out.push(l), err: (l) => out.push(l) },
  );
  expect({ code, out }).toEqual({ code: 0, out: [expect.stringMatching(new RegExp(`^replayed job ${id} in ${queue} `))] });
  return out;
}

describe('replaying dead letters is idempotent', () => {
  it('an events batch that was already applied is counted once', async () => {
    // The batch's first delivery ended in the failed set (here: no aggregator ran it; in production e.g. a crash
    // after the apply followed by spent attempts) and a second delivery with the same batch id was applied.
    const payload = batch('batch-dup-1', 'S', 3);
    await deadLetter(queues[QUEUE.events], payload, 'first-delivery', 'simulated: worker lost the job after applying it');

    aggregator = await stack.startApp('bucket-aggregator', { env });
    writer = await stack.startApp('dynamo-writer', { env });
    await enqueue(queues, QUEUE.events, payload, { jobId: 'second-delivery' });
    await waitFor(async () => (await views('S')) === 3n && (await outboxEmpty('S')), {
      timeoutMs: 30_000,
      message: 'the batch written to DynamoDB',
    });

    await replay(QUEUE.events, 'first-delivery');
    // The replayed job runs and completes (completed events jobs are removed at once): the aggregator counts it
    // as a duplicate batch, applied no second time.
    await waitFor(async () => metricValue(await aggregator.metrics(), 'tally_batches_duplicate_total') === 1, {
      timeoutMs: 15_000,
      message: 'the replayed job to complete as a duplicate',
    });
    expect(await queues[QUEUE.events].getJob('first-delivery')).toBeUndefined();

    // Nothing of the replay anywhere in Redis (open, sealed or outbox) or DynamoDB: a second apply would sit in
    // the open bucket right now.
    const pending = await buckets.snapshot('S', ['S', 'S#product#P1']);
    expect(pending.map((r) => r.entries)).toEqual([[], []]);
    const m = await aggregator.metrics();
    expect(metricValue(m, 'tally_batches_applied_total')).toBe(1);
    expect(metricValue(m, 'tally_batches_duplicate_total')).toBe(1);
    expect(metricValue(m, 'tally_events_applied_total')).toBe(3);
    expect(await views('S')).toBe(3n);
    expect(await views('S#product#P1')).toBe(3n);
    expect(await outboxEmpty('S')).toBe(true);
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
  });

  it('a flush job for a row whose outbox was already written sends no UpdateItem and changes no total', async () => {
    await enqueue(queues, QUEUE.events, batch('batch-t-1', 'T', 5));
    await waitFor(async () => (await views('T')) === 5n && (await outboxEmpty('T')), {
      timeoutMs: 30_000,
      message: 'T written to DynamoDB',
    });
    await waitForQueuesIdle([queues[QUEUE.events], queues[QUEUE.dynamoWrites]], { timeoutMs: 15_000 });
    const before = await getItem(dynamo, 'T', 'TOTAL');

    // No sealer and no writer while the dead letter is made, so no other flush job is around.
    await aggregator.stop();
    await writer.stop();
    await deadLetter(queues[QUEUE.dynamoWrites], { store: 'T', pk: 'T' }, 'flush-T-replayed', 'simulated: DynamoDB kept throttling');
    await writer.restart(); // fresh counters: every DynamoDB request below is the replay's

    await replay(QUEUE.dynamoWrites, 'flush-T-replayed');
    await waitFor(async () => metricValue(await writer.metrics(), 'tally_flushes_empty_total') === 1, {
      timeoutMs: 15_000,
      message: 'the replayed flush job to run',
    });
    const m = await writer.metrics();
    expect(metricValue(m, 'tally_dynamodb_requests_total', { operation: 'UpdateItem' })).toBe(0);
    expect(metricValue(m, 'tally_dynamodb_consumed_write_units_total')).toBe(0);
    expect(metricValue(m, 'tally_rows_flushed_total')).toBe(0);
    expect(await getItem(dynamo, 'T', 'TOTAL')).toEqual(before);
    expect(await views('T')).toBe(5n);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
  });

  it('a batch for a store created later waits in the failed set, and once the tenant exists a replay counts it in its time zone', async () => {
    await aggregator.restart();
    const ts = Date.now() - 60_000;
    // A zone whose date differs from UTC's at `ts` (one of the two always does), so binning in UTC would show.
    const zone = ['Pacific/Kiritimati', 'Pacific/Pago_Pago'].find((z) => localDate(ts, z).doy !== localDate(ts, 'UTC').doy)!;
    const client = createTallyClient({ connection: stack.redisServer.url, keyPrefix: PREFIX });
    try {
      const sent = await client.enqueueEvents('LATER', [
        { type: 'view', ts, dims: { product: 'P1' } },
        { type: 'view', ts, dims: { product: 'P2' } },
      ]);
      await waitFor(async () => (await queues[QUEUE.events].getFailedCount()) === 1, {
        timeoutMs: 15_000,
        message: 'the batch refused as an unknown store',
      });
      const [failed] = await queues[QUEUE.events].getFailed();
      expect(failed!.failedReason).toBe(
        `unknown store LATER: it has no tenant; batch ${sent.batchId} not applied (nothing written). Create the tenant, then replay this job`,
      );
      expect(metricValue(await aggregator.metrics(), 'tally_batches_rejected_total', { reason: 'unknown_store' })).toBe(1);
      expect(await buckets.snapshot('LATER', ['LATER'])).toEqual([expect.objectContaining({ entries: [] })]);
      // The client knows now: the next call for the store is refused at once, nothing enqueued.
      await expect(client.enqueueEvents('LATER', [{ type: 'view', ts, dims: { product: 'P3' } }])).rejects.toBeInstanceOf(
        UnknownStoreError,
      );

      await createTenant({ dynamo: dynamo.client, table: stack.table }, 'LATER', { timeZone: zone });
      const out: string[] = [];
      const code = await runDlqCli(
        ['replay', QUEUE.events, '--reason', 'unknown store LATER'],
        { queues, dedupeWindowMs: 86_400_000 },
        { out: (l) => out.push(l), err: (l) => out.push(l) },
      );
      expect({ code, out }).toEqual({ code: 0, out: [expect.stringMatching(/^replayed 1 /)] });
      await waitFor(async () => (await views('LATER')) === 2n && (await outboxEmpty('LATER')), {
        timeoutMs: 30_000,
        message: 'the replayed batch written to DynamoDB',
      });
      const day = localDate(ts, zone);
      expect((await getItem(dynamo, 'LATER', monthSk(day.year, day.month)))?.attrs.get(dayAttr(day.doy, 'v'))).toBe(2n);
      expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
      // The replay lifted the store's mark: the client sends to it again.
      expect((await client.enqueueEvents('LATER', [{ type: 'view', ts, dims: { product: 'P3' } }])).accepted).toBe(1);
      await waitFor(async () => (await views('LATER')) === 3n, { timeoutMs: 30_000, message: 'the next batch counted' });
    } finally {
      await client.close();
    }
  });
});
