import { BucketStore } from '@tally/buckets';
import { BULL_PREFIX, createQueues, closeQueues, enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { startRedis, waitForQueuesIdle, type RedisHandle } from '@tally/testing';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor } from './events.processor';
import { readBacklog, sealTick } from './seal.processor';

let server: RedisHandle;
let redis: Redis;
let queues: TallyQueues;
let buckets: BucketStore;
const log = pino({ level: 'silent' });
const rules = compileRules(defaultRules);
const zones: Record<string, string> = { LA: 'America/Los_Angeles', KTM: 'Asia/Kathmandu' };
let metrics: ReturnType<typeof createAggregatorMetrics>;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  queues = createQueues(redis);
  buckets = new BucketStore({ redis, rules });
});
afterAll(async () => {
  await closeQueues(queues);
  await redis.quit();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
  metrics = createAggregatorMetrics(new Registry());
});

function worker(now?: () => number) {
  return new Worker(
    QUEUE.events,
    eventsProcessor({ buckets, rules, timeZoneOf: async (s) => zones[s] ?? 'UTC', dedupeTtlSeconds: 3600, metrics, log, now }),
    { connection: redis.duplicate(), prefix: BULL_PREFIX, concurrency: 4 },
  );
}

/** Everything Redis holds for a row, summed per field over buckets and outbox. */
async function redisTotals(store: string, pk: string) {
  const [row] = await buckets.snapshot(store, [pk]);
  const out: Record<string, string> = {};
  for (const e of row!.entries) out[`${e.dayKey}|${e.metric}`] = String(BigInt(out[`${e.dayKey}|${e.metric}`] ?? 0) + e.value);
  return out;
}

const view = (ts: string, product = 'P1', visitor?: string) => ({ type: 'view', ts: Date.parse(ts), dims: (visitor ? { product, visitor } : { product }) as Record<string, string> });

describe('events processor', () => {
  it('counts a batch delivered twice once', async () => {
    const w = worker();
    const data = { batchId: 'batch-1', store: 'S', receivedAt: 1, events: [view('2023-05-03T10:00:00Z'), view('2023-05-03T10:01:00Z')] };
    await enqueue(queues, QUEUE.events, data, { jobId: 'j1' });
    await enqueue(queues, QUEUE.events, data, { jobId: 'j2' }); // a retried request that got another job id
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '2' });
    expect(await redisTotals('S', 'S#product#P1')).toEqual({ '2023-123|v': '2' });
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
  });

  it('bins by the store zone and puts a late event into its own (previous) month', async () => {
    const w = worker();
    // 2023-06-01T05:00Z is still May 31 in Los Angeles (-07:00): a late event into the previous month.
    await enqueue(queues, QUEUE.events, { batchId: 'b', store: 'LA', receivedAt: 1, events: [view('2023-06-01T05:00:00Z'), view('2023-06-01T08:00:00Z')] });
    await enqueue(queues, QUEUE.events, { batchId: 'c', store: 'KTM', receivedAt: 1, events: [view('2023-12-31T18:15:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await redisTotals('LA', 'LA')).toEqual({ '2023-151|v': '1', '2023-152|v': '1' });
    expect(await redisTotals('KTM', 'KTM')).toEqual({ '2024-001|v': '1' });
  });

  it('moves an unprocessable batch to the failed set with its reason, and keeps going', async () => {
    const w = worker();
    await queues[QUEUE.events].add(QUEUE.events, { batchId: 'x', store: 'S', receivedAt: 1, events: [{ type: 'teleport', ts: 1, dims: {} }] });
    await queues[QUEUE.events].add(QUEUE.events, { nonsense: true });
    await enqueue(queues, QUEUE.events, { batchId: 'ok', store: 'S', receivedAt: 1, events: [view('2023-05-03T10:00:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    const failed = await queues[QUEUE.events].getFailed();
    expect(failed.map((j) => j.failedReason).sort()).toEqual([
      'batch x: unknown event type "teleport"',
      expect.stringMatching(/^invalid events payload: /),
    ]);
    expect(failed.every((j) => j.attemptsMade === 1)).toBe(true);
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '1' });
  });

  it('applies 300 batches of 1000 orders of the maximum value exactly (the issue: sums past int64 were lost)', async () => {
    const w = worker();
    const ts = Date.parse('2026-12-01T12:00:00Z');
    const order = { type: 'order', ts, dims: {}, value: '1000000000000' };
    for (let b = 0; b < 300; b++) {
      await enqueue(queues, QUEUE.events, { batchId: `b${b}`, store: 'S', receivedAt: 1, events: Array.from({ length: 1000 }, () => order) });
    }
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    // 300000000000000000 in minor units (scale 2).
    expect(await redisTotals('S', 'S')).toEqual({ '2026-335|o': '300000', '2026-335|r': '30000000000000000000' });
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(0);
  });

  it('sends a batch whose sum cannot be held (past 38 digits) whole to the failed set with its reason and a metric', async () => {
    const w = worker();
    const ts = Date.parse('2026-12-01T12:00:00Z');
    // A bucket count already one below 10^38 (written directly: no real traffic gets near it).
    await buckets.apply('S', 'seed', new Map([['S', new Map([['2026-335|r', 10n ** 38n - 1n]])]]), { now: Date.now(), dedupeTtlSeconds: 60 });
    await enqueue(queues, QUEUE.events, { batchId: 'big', store: 'S', receivedAt: 1, events: [{ type: 'order', ts, dims: { visitor: 'V' }, value: '1' }] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    const failed = await queues[QUEUE.events].getFailed();
    expect(failed.map((j) => j.failedReason)).toEqual([expect.stringMatching(/^batch big of store S not applied \(nothing written\): TALLY_ERR_SUM_OVERFLOW S 2026-335\|r/)]);
    expect(failed[0]!.attemptsMade).toBe(1);
    // Nothing of it landed: not the visitor row, not the order count, and no dedupe record that would hide a replay.
    expect(await redisTotals('S', 'S')).toEqual({ '2026-335|r': String(10n ** 38n - 1n) });
    expect(await redisTotals('S', 'S#visitor#V')).toEqual({});
    expect(await redis.exists(buckets.keys.batch('S', 'big'))).toBe(0);
    expect((await metrics.batchesRejected.get()).values).toEqual([expect.objectContaining({ labels: { reason: 'overflow' }, value: 1 })]);
  });
});

describe('sealer tick', () => {
  it('seals across bucket boundaries, folds in order and schedules one flush per due row', async () => {
    let clock = 1_000_000;
    const w = worker(() => clock);
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => clock };
    await enqueue(queues, QUEUE.events, { batchId: 'a', store: 'S', receivedAt: 1, events: [view('2023-05-03T23:59:59Z', 'P1', 'V1')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    clock += 1000;
    expect(await sealTick(deps)).toMatchObject({ sealed: 1, folded: 1, rows: 3 });
    await enqueue(queues, QUEUE.events, { batchId: 'b', store: 'S', receivedAt: 1, events: [view('2023-05-04T00:00:00Z', 'P1', 'V1')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    clock += 400; // less than half a bucket: no seal yet
    expect(await sealTick(deps)).toMatchObject({ sealed: 0 });
    clock += 600;
    expect(await sealTick(deps)).toMatchObject({ sealed: 1, folded: 1 });
    await w.close();
    const out = await buckets.readOutbox('S', 'S#product#P1');
    expect(out.entries.map((e) => `${e.seq}|${e.dayKey}|${e.metric}=${e.value}`).sort()).toEqual([
      '1000000|2023-123|v=1',
      '1001000|2023-124|v=1',
    ]);
    // The backlog the scrape-time gauges report: 3 dirty rows, the oldest folded at 1_001_000.
    // Outbox entries: store and product rows 2 each (two buckets), visitor row 2 + 2 (ViewCount, ProductViews#P1).
    expect(await readBacklog(buckets, clock)).toEqual({ dirtyRows: 3, outboxEntries: 8, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: (clock - 1_001_000) / 1000 });
    // Default rules: the store row is written hourly, the visitor once idle 30 min, products once a day.
    expect(await queues[QUEUE.dynamoWrites].count()).toBe(0);
    clock += 3_600_000;
    const t = await sealTick(deps);
    expect(t.flushes).toBe(2); // store (hourly), visitor (idle for 30 min)
    expect((await sealTick(deps)).flushes).toBe(2);
    expect(await queues[QUEUE.dynamoWrites].count()).toBe(2); // same ids: no duplicate jobs
    clock += 86_400_000;
    expect((await sealTick(deps)).flushes).toBe(3);
    const jobs = await queues[QUEUE.dynamoWrites].getWaiting();
    expect(jobs.map((j) => j.data.pk).sort()).toEqual(['S', 'S#product#P1', 'S#visitor#V1']);
  });
});
