import { DeleteItemCommand, PutItemCommand, ScanCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createDynamoClient } from '@tally/dynamo';
import { EXPIRES_ATTR } from '@tally/key-layout';
import { closeQueues, createQueues, createShardWorkers, QUEUE, scheduleRetentionRestamp } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { changeTenant, createTenant, RETENTION_SETTLE_MS, type TenantDb } from '@tally/tenants';
import { createTestTable, metricValue, startDynalite, startRedis, waitFor, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { DelayedError, type Job, type Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRestampMetrics, restampProcessor } from './restamp.processor';

// The dynamo-writer's restamp of a store's visitor items after a change of its historyMonths (restamp.processor.ts):
// the job the admin API and `tenants set` schedule (libs/queues scheduleRetentionRestamp), run by the worker main.ts
// starts. Every time is relative to the test's own clock (months of the items from Date.now(), in UTC); the settle time
// is shortened here to SETTLE_MS, except where a clock is injected.

const SETTLE_MS = 1_000;
const log = pino({ level: 'silent' });
const rules = compileRules(defaultRules);
let server: RedisHandle;
let dyn: DynaliteHandle;
let redis: Redis;
let client: DynamoDBClient;

beforeAll(async () => {
  server = await startRedis();
  dyn = await startDynalite();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  client = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1' });
});
afterAll(async () => {
  await redis?.quit();
  client?.destroy();
  await dyn?.stop();
  await server?.stop();
});

const closing: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
  vi.restoreAllMocks();
});

interface Month {
  year: number;
  month: number;
}
const monthsBack = (back: number): Month => {
  const d = new Date();
  const m = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - back, 1));
  return { year: m.getUTCFullYear(), month: m.getUTCMonth() + 1 };
};
const sk = (m: Month) => `M${m.year}-${String(m.month).padStart(2, '0')}`;
/** A month item's stamp under `months` of history: the first day of the month `months` later, plus a day (UTC). */
const expiry = (m: Month, months: number) => Date.UTC(m.year, m.month - 1 + months, 2) / 1000;

/** A fresh table with store `store` (UTC, `months` of history) and one visitor's items stamped as the writer did. */
async function storeWithVisitor(store: string, months: number): Promise<TenantDb> {
  const db = { dynamo: client, table: await createTestTable(dyn.endpoint) };
  await createTenant(db, store, { historyMonths: months });
  for (const [s, m] of [
    [sk(monthsBack(0)), monthsBack(0)],
    [sk(monthsBack(1)), monthsBack(1)],
    ['TOTAL', monthsBack(0)],
  ] as const)
    await db.dynamo.send(
      new PutItemCommand({
        TableName: db.table,
        Item: { pk: { S: `${store}#visitor#V1` }, sk: { S: s }, v: { N: '1' }, [EXPIRES_ATTR]: { N: String(expiry(m, months)) } },
      }),
    );
  return db;
}

/** The visitor's items as stamped under `months` of history. */
const stampedFor = (store: string, months: number) => ({
  [`${store}#visitor#V1 ${sk(monthsBack(0))}`]: expiry(monthsBack(0), months),
  [`${store}#visitor#V1 ${sk(monthsBack(1))}`]: expiry(monthsBack(1), months),
  [`${store}#visitor#V1 TOTAL`]: expiry(monthsBack(0), months),
});

async function stamps(db: TenantDb): Promise<Record<string, number | null>> {
  const items = (await db.dynamo.send(new ScanCommand({ TableName: db.table, ConsistentRead: true }))).Items ?? [];
  return Object.fromEntries(
    items
      .filter((i) => !i['pk']!.S!.startsWith('_'))
      .map((i) => [`${i['pk']!.S} ${i['sk']!.S}`, i[EXPIRES_ATTR] ? Number(i[EXPIRES_ATTR].N) : null]),
  );
}

let prefixes = 0;

/**
 * The maintenance queue of a layout of its own and, unless `worker: false`, the dynamo-writer's worker on it (as main.ts
 * makes it, with `db`), recording each job it completed.
 */
async function writer(db: TenantDb, opts: { worker?: boolean; settleMs?: number } = {}) {
  const settleMs = opts.settleMs ?? SETTLE_MS;
  const layout = { keyPrefix: `rs${++prefixes}`, shards: 1 };
  const queues = createQueues(redis, layout);
  const registry = new Registry();
  const metrics = createRestampMetrics(registry);
  const done: Array<{ job: Job; result: unknown }> = [];
  const failed: string[] = [];
  let workers: Worker[] = [];
  const start = () => {
    workers = createShardWorkers(QUEUE.maintenance, restampProcessor({ db, rules, metrics, log, settleMs }), layout, {
      connection: redis,
      concurrency: 1,
      lockMs: 30_000,
    });
    for (const w of workers) {
      w.on('completed', (job, result) => done.push({ job, result }));
      w.on('failed', (job, err) => failed.push(`${job?.id}: ${err.message}`));
    }
  };
  if (opts.worker !== false) start();
  closing.push(async () => {
    await Promise.all(workers.map((w) => w.close()));
    await closeQueues(queues);
  });
  /** Changes the store's historyMonths as the admin API does: the restamp scheduled before and after the write. */
  const change = (store: string, historyMonths: number | null) =>
    changeTenant(db, store, { historyMonths }, { restamp: (at) => scheduleRetentionRestamp(queues, store, at, settleMs) });
  const outcome = async (name: string) => metricValue(await registry.metrics(), 'tally_retention_restamps_total', { outcome: name });
  const pending = async () => queues[QUEUE.maintenance].getJobs(['delayed', 'waiting', 'active']);
  return { queues, done, failed, start, change, outcome, pending };
}

describe('the restamp job (dynamo-writer)', () => {
  it("restamps the store's visitor items with the new setting, no earlier than the settle time after the change", async () => {
    const db = await storeWithVisitor('RJ1', 6);
    const w = await writer(db);
    const { history } = await w.change('RJ1', 24);
    expect(history).toEqual({ before: 6, changedAt: expect.any(Number) });
    await waitFor(() => w.done.length === 1, { timeoutMs: 15_000 });
    const [{ job, result }] = w.done as [{ job: Job; result: unknown }];
    expect(job.data).toEqual({ kind: 'restamp-retention', store: 'RJ1', changedAt: history!.changedAt });
    expect(job.processedOn).toBeGreaterThanOrEqual(history!.changedAt + SETTLE_MS);
    expect(result).toEqual({ store: 'RJ1', historyMonths: 24, scanned: 3, restamped: 3, changedMeanwhile: 0, totalsWithoutMonths: 0 });
    expect(await stamps(db)).toEqual(stampedFor('RJ1', 24));
    expect([await w.outcome('done'), await w.outcome('postponed'), w.failed]).toEqual([1, 0, []]);
    expect(await w.pending()).toEqual([]);
  });

  it('completes without error, doing nothing, for a store deleted meanwhile', async () => {
    const db = await storeWithVisitor('RJ2', 6);
    const w = await writer(db);
    await w.change('RJ2', 12);
    await db.dynamo.send(new DeleteItemCommand({ TableName: db.table, Key: { pk: { S: '_tenant#RJ2' }, sk: { S: 'META' } } }));
    await waitFor(() => w.done.length === 1, { timeoutMs: 15_000 });
    expect(w.done[0]!.result).toEqual({ store: 'RJ2', deleted: true });
    expect([await w.outcome('store_gone'), w.failed, await w.queues[QUEUE.maintenance].getFailedCount()]).toEqual([1, [], 0]);
    expect(await stamps(db)).toEqual(stampedFor('RJ2', 6));
  });

  it('retries after another error, with the backoff of the queue, and then restamps', async () => {
    const db = await storeWithVisitor('RJ3', 6);
    const flaky = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1' });
    closing.push(async () => flaky.destroy());
    const send = flaky.send.bind(flaky);
    let scans = 0;
    vi.spyOn(flaky, 'send').mockImplementation(((command: unknown) =>
      command instanceof ScanCommand && ++scans === 1
        ? Promise.reject(new Error('DynamoDB unreachable (test)'))
        : send(command as never)) as never);
    const w = await writer({ dynamo: flaky, table: db.table });
    await w.change('RJ3', 24);
    await waitFor(() => w.failed.length === 1, { timeoutMs: 15_000 });
    expect(w.failed[0]).toMatch(/DynamoDB unreachable \(test\)$/);
    // Not in the failed set: waiting to retry (QUEUE_SETTINGS: attempts with exponential backoff from 10 s).
    const [job] = await w.pending();
    expect([await job!.getState(), job!.attemptsMade, await w.queues[QUEUE.maintenance].getFailedCount()]).toEqual(['delayed', 1, 0]);
    await job!.promote();
    await waitFor(() => w.done.length === 1, { timeoutMs: 15_000 });
    expect(w.done[0]!.result).toMatchObject({ historyMonths: 24, restamped: 3 });
    expect(await stamps(db)).toEqual(stampedFor('RJ3', 24));
  });
});

describe('coalescing the restamps of a store', () => {
  it('with injected clocks: the job of the first of two changes waits until the settle time after the second, then applies it', async () => {
    const db = await storeWithVisitor('RJ4', 6);
    const t0 = Date.now();
    const t1 = t0 + 40_000; // the second change, within the settle time of the first
    const scheduled: number[] = [];
    const restamp = async (at: number) => void scheduled.push(at);
    expect((await changeTenant(db, 'RJ4', { historyMonths: 12 }, { now: () => t0, restamp })).history).toEqual({
      before: 6,
      changedAt: t0,
    });
    expect((await changeTenant(db, 'RJ4', { historyMonths: 24 }, { now: () => t1, restamp })).history).toEqual({
      before: 12,
      changedAt: t1,
    });
    // Scheduled before and after each write (the queue keeps one job per store: scheduleRetentionRestamp).
    expect(scheduled).toEqual([t0, t0, t1, t1]);

    const registry = new Registry();
    const metrics = createRestampMetrics(registry);
    const run = (now: number) => {
      const job = {
        id: 'j1',
        data: { kind: 'restamp-retention', store: 'RJ4', changedAt: t0 },
        moveToDelayed: vi.fn(async () => undefined),
      };
      const processor = restampProcessor({ db, rules, metrics, log, now: () => now });
      return { job, result: processor(job as unknown as Job, 'token') };
    };
    // Due for the first change (settle time after it), not yet for the second: it waits, until then, and writes nothing.
    for (const now of [t0 + RETENTION_SETTLE_MS, t1 + RETENTION_SETTLE_MS - 1]) {
      const { job, result } = run(now);
      await expect(result).rejects.toBeInstanceOf(DelayedError);
      expect(job.moveToDelayed).toHaveBeenCalledWith(t1 + RETENTION_SETTLE_MS, 'token');
    }
    expect(await stamps(db)).toEqual(stampedFor('RJ4', 6));
    // Settle time after the last change: one restamp, with the last setting.
    const { job, result } = run(t1 + RETENTION_SETTLE_MS);
    expect(await result).toMatchObject({ store: 'RJ4', historyMonths: 24, restamped: 3 });
    expect(job.moveToDelayed).not.toHaveBeenCalled();
    expect(await stamps(db)).toEqual(stampedFor('RJ4', 24));
    expect(metricValue(await registry.metrics(), 'tally_retention_restamps_total', { outcome: 'postponed' })).toBe(2);
  });

  it('through the queue: changes within the settle time leave one job pending, and one restamp runs, with the last value, after the last', async () => {
    const db = await storeWithVisitor('RJ5', 6);
    // Longer than the 250 ms between changes by far, even on a loaded machine.
    const settleMs = 3_000;
    const w = await writer(db, { settleMs });
    const changes: number[] = [];
    for (const months of [12, 3, 24]) {
      changes.push((await w.change('RJ5', months)).history!.changedAt);
      const pending = await w.pending();
      expect(pending.map((j) => [j.data.changedAt, j.delay])).toEqual([[changes.at(-1), settleMs]]);
      await new Promise((r) => setTimeout(r, 250));
    }
    await waitFor(() => w.done.length === 1, { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 1_000)); // and no other comes
    expect(w.done).toHaveLength(1);
    expect(w.done[0]!.job.processedOn).toBeGreaterThanOrEqual(changes.at(-1)! + settleMs);
    expect(w.done[0]!.result).toMatchObject({ historyMonths: 24, restamped: 3 });
    expect(await stamps(db)).toEqual(stampedFor('RJ5', 24));
    expect([await w.outcome('done'), await w.outcome('postponed')]).toEqual([1, 0]);
  });

  it('a change while a restamp runs: another follows it, the settle time after it ends, with the last value', async () => {
    const db = await storeWithVisitor('RJ6', 6);
    // The Scan of the first restamp waits for the test (a long one): meanwhile the setting changes again.
    const slow = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1' });
    closing.push(async () => slow.destroy());
    const send = slow.send.bind(slow);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let scans = 0;
    vi.spyOn(slow, 'send').mockImplementation((async (command: unknown) => {
      if (command instanceof ScanCommand && ++scans <= 8) await gate; // the first restamp's 8 segments
      return send(command as never);
    }) as never);
    const w = await writer({ dynamo: slow, table: db.table });
    await w.change('RJ6', 12);
    await waitFor(() => scans > 0, { timeoutMs: 15_000 });
    const { history } = await w.change('RJ6', 24);
    // Kept aside by the queue (keepLastIfActive): only the running one is there.
    expect((await w.pending()).map((j) => j.data.changedAt)).toHaveLength(1);
    release();
    await waitFor(() => w.done.length === 2, { timeoutMs: 15_000 });
    // The first applied the setting it read before the change; the second, the last one.
    expect(w.done.map((d) => (d.result as { historyMonths: number }).historyMonths)).toEqual([12, 24]);
    expect(w.done[1]!.job.data.changedAt).toBe(history!.changedAt);
    expect(w.done[1]!.job.processedOn).toBeGreaterThanOrEqual(w.done[0]!.job.finishedOn! + SETTLE_MS);
    expect(await stamps(db)).toEqual(stampedFor('RJ6', 24));
    expect(await w.pending()).toEqual([]);
  });

  it('a change while the restamp is due and waiting for a worker: that one waits until the settle time after the change', async () => {
    const db = await storeWithVisitor('RJ7', 6);
    // Long enough for the worker, started at once, to find the job before it is due again, even on a loaded machine.
    const settleMs = 5_000;
    const w = await writer(db, { worker: false, settleMs });
    await w.change('RJ7', 12);
    const [due] = await w.pending();
    await due!.promote(); // due: waiting for a worker (every writer busy)
    const { history } = await w.change('RJ7', 24);
    // The queue dropped the second change's job (the first is no longer delayed)...
    expect((await w.pending()).map((j) => j.id)).toEqual([due!.id]);
    w.start();
    // ... but the tenant records the change: the first job waits for it, then applies it.
    await waitFor(() => w.done.length === 1, { timeoutMs: 15_000 });
    expect(w.done[0]!.job.id).toBe(due!.id);
    expect(w.done[0]!.job.processedOn).toBeGreaterThanOrEqual(history!.changedAt + settleMs);
    expect(w.done[0]!.result).toMatchObject({ historyMonths: 24, restamped: 3 });
    expect(await w.outcome('postponed')).toBe(1);
    expect(await stamps(db)).toEqual(stampedFor('RJ7', 24));
  });
});
