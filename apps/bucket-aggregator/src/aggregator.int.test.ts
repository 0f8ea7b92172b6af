import type { BucketStore } from '@tally/buckets';
import { enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, flattenDistinct, flattenRows, rollup, rollupDistinct } from '@tally/schema';
import { waitForQueuesIdle } from '@tally/testing';
import { UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor, STORE_ZONE_TTL_MS, storeMarks, tenantTimeZones, type EventsProcessorDeps } from './events.processor';
import { readBacklog, sealProcessor, sealTick } from './seal.processor';
import { sealJob, useAggregatorRedis, writeRows } from './test-fixtures';

let redis: Redis;
let queues: TallyQueues;
let buckets: BucketStore;
const log = pino({ level: 'silent' });
const rules = compileRules(defaultRules);
const zones: Record<string, string> = { LA: 'America/Los_Angeles', KTM: 'Asia/Kathmandu' };
let metrics: ReturnType<typeof createAggregatorMetrics>;

useAggregatorRedis(rules, (r) => void ({ redis, queues, buckets } = r));
beforeEach(async () => {
  await redis.flushall();
  metrics = createAggregatorMetrics(new Registry());
});

/** An events worker (4 jobs at once, stores in `zones` or UTC, a dedupe window of 1 h) with `o` in its processor's deps. */
function worker(o: Partial<Pick<EventsProcessorDeps, 'now' | 'timeZoneOf' | 'unknownStores' | 'crash'>> & { concurrency?: number } = {}) {
  const { concurrency = 4, ...deps } = o;
  const processor = eventsProcessor({
    buckets,
    rules,
    timeZoneOf: async (s) => zones[s] ?? 'UTC',
    dedupeTtlSeconds: 3600,
    metrics,
    log,
    ...deps,
  });
  return new Worker(QUEUE.events, processor, { connection: redis.duplicate(), prefix: queues[QUEUE.events].opts.prefix, concurrency });
}

/** The reasons of the events jobs in the failed set, sorted. */
const failedReasons = async () => (await queues[QUEUE.events].getFailed()).map((j) => j.failedReason).sort();

/** S's Revenue of 2026-12-01 at 10^38 - 1, the most a bucket count holds (written directly: no real traffic gets near it). */
const seedMaxRevenue = () =>
  buckets.apply('S', 'seed', new Map([['S', new Map([['2026-335|r', 10n ** 38n - 1n]])]]), { now: Date.now(), dedupeTtlSeconds: 60 });

/** Everything Redis holds for a row, summed per field over buckets and outbox. */
async function redisTotals(store: string, pk: string) {
  const [row] = await buckets.snapshot(store, [pk]);
  const out: Record<string, string> = {};
  for (const e of row!.entries) out[`${e.dayKey}|${e.metric}`] = String(BigInt(out[`${e.dayKey}|${e.metric}`] ?? 0) + e.value);
  return out;
}

const view = (ts: string, product = 'P1', visitor?: string) => ({
  type: 'view',
  ts: Date.parse(ts),
  dims: (visitor ? { product, visitor } : { product }) as Record<string, string>,
});

describe('events processor', () => {
  it('counts a batch delivered twice once', async () => {
    const w = worker();
    const data = {
      batchId: 'batch-1',
      store: 'S',
      receivedAt: Date.now(),
      events: [view('2023-05-03T10:00:00Z'), view('2023-05-03T10:01:00Z')],
    };
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
    await enqueue(queues, QUEUE.events, {
      batchId: 'b',
      store: 'LA',
      receivedAt: Date.now(),
      events: [view('2023-06-01T05:00:00Z'), view('2023-06-01T08:00:00Z')],
    });
    await enqueue(queues, QUEUE.events, { batchId: 'c', store: 'KTM', receivedAt: Date.now(), events: [view('2023-12-31T18:15:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await redisTotals('LA', 'LA')).toEqual({ '2023-151|v': '1', '2023-152|v': '1' });
    expect(await redisTotals('KTM', 'KTM')).toEqual({ '2024-001|v': '1' });
  });

  it('applies a batch the collector rolled up (rows) as the same events would be, once, and refuses rows of another store', async () => {
    const w = worker();
    const events = [view('2023-06-01T05:00:00Z', 'P1', 'V1'), view('2023-06-01T08:00:00Z', 'P2', 'V1')];
    const rows = flattenRows(rollup(rules, 'LA', 'America/Los_Angeles', events));
    await enqueue(queues, QUEUE.events, { batchId: 'ev', store: 'LA', receivedAt: Date.now(), events });
    const rolledUp = {
      batchId: 'rw',
      store: 'LA2',
      receivedAt: Date.now(),
      rows: flattenRows(rollup(rules, 'LA2', 'America/Los_Angeles', events)),
      count: 2,
    };
    await enqueue(queues, QUEUE.events, rolledUp);
    await enqueue(queues, QUEUE.events, rolledUp, { jobId: 'again' });
    await queues[QUEUE.events].add(QUEUE.events, { batchId: 'steal', store: 'LA2', receivedAt: Date.now(), rows, count: 2 });
    await queues[QUEUE.events].add(QUEUE.events, { batchId: 'both', store: 'LA', receivedAt: Date.now(), rows, count: 2, events });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    for (const pk of ['', '#product#P1', '#product#P2', '#visitor#V1'])
      expect(await redisTotals('LA2', `LA2${pk}`)).toEqual(await redisTotals('LA', `LA${pk}`));
    expect(await redisTotals('LA2', 'LA2')).toEqual({ '2023-151|v': '1', '2023-152|v': '1' });
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
    expect((await metrics.eventsApplied.get()).values[0]!.value).toBe(4);
    expect(await failedReasons()).toEqual([
      'invalid events payload: events: a batch has either events or rows (with count)',
      'invalid events payload: rows.0: the row is not one of store LA2',
    ]);
  });

  it('adds the distinct members a rolled-up batch carries (distinct) before its rows, once in effect, and refuses bad ones whole', async () => {
    const w = worker();
    const events = Array.from({ length: 40 }, (_, i) => view('2023-06-01T08:00:00Z', `P${i % 2}`, `V${i % 25}`));
    const job = (store: string, batchId: string) => ({
      batchId,
      store,
      receivedAt: Date.now(),
      rows: flattenRows(rollup(rules, store, 'America/Los_Angeles', events)),
      distinct: flattenDistinct(rollupDistinct(rules, store, 'America/Los_Angeles', events)),
      count: events.length,
    });
    await enqueue(queues, QUEUE.events, { batchId: 'ev', store: 'LA', receivedAt: Date.now(), events });
    await enqueue(queues, QUEUE.events, job('LA2', 'rw'));
    await enqueue(queues, QUEUE.events, job('LA2', 'rw'), { jobId: 'retried' }); // a retry under another job id
    await queues[QUEUE.events].add(QUEUE.events, { ...job('LA2', 'steal'), distinct: job('LA', 'x').distinct });
    await queues[QUEUE.events].add(QUEUE.events, {
      ...job('LA2', 'short'),
      distinct: ['LA2', 1, '2023-152|uv', Buffer.alloc(12).toString('base64')],
    });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    const uniques = async (store: string, pk: string) => {
      const [live] = await buckets.sketches.read(store, [pk]);
      const [u] = await buckets.sketches.union(store, [live!.map((s) => s.blob)], false);
      return { fields: live!.map((s) => s.field), count: u!.count };
    };
    expect(await uniques('LA2', 'LA2')).toEqual({ fields: ['2023-152|uv'], count: 25 });
    expect(await uniques('LA2', 'LA2')).toEqual(await uniques('LA', 'LA'));
    for (const p of ['P0', 'P1']) expect(await uniques('LA2', `LA2#product#${p}`)).toEqual(await uniques('LA', `LA#product#${p}`));
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
    expect(await failedReasons()).toEqual([
      'invalid events payload: distinct.0: the row is not one of store LA2',
      'invalid events payload: distinct.3: not whole 8-byte member ids',
    ]);
  });

  it('applies a rolled-up batch of other rules without the metrics these rules do not count, refuses whole a day that does not exist', async () => {
    const w = worker();
    const ids = Buffer.alloc(8, 7).toString('base64');
    const batch = (batchId: string, rows: Array<string | number>, distinct?: Array<string | number>) => ({
      batchId,
      store: 'S',
      receivedAt: Date.now(),
      rows,
      count: 1,
      ...(distinct ? { distinct } : {}),
    });
    await enqueue(queues, QUEUE.events, batch('other', ['S', 2, '2023-152|v', 1, '2023-152|zz#P1', 3]));
    await enqueue(queues, QUEUE.events, batch('uvcount', ['S', 1, '2023-152|uv', 3]));
    await enqueue(queues, QUEUE.events, batch('vsketch', ['S', 1, '2023-152|v', 1], ['S', 1, '2023-152|v', ids]));
    await queues[QUEUE.events].add(QUEUE.events, batch('leap', ['S', 1, '2023-366|v', 1]));
    await queues[QUEUE.events].add(QUEUE.events, batch('nil', ['S', 1, '2023-000|v', 1]));
    await enqueue(queues, QUEUE.events, batch('ok', ['S', 1, '2024-366|v', 2], ['S', 1, '2024-366|uv', ids]));
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await failedReasons()).toEqual([
      'invalid events payload: rows.2: not a day: day of year 0 does not exist in 2023',
      'invalid events payload: rows.2: not a day: day of year 366 does not exist in 2023',
    ]);
    expect((await queues[QUEUE.events].getFailed()).every((j) => j.attemptsMade === 1)).toBe(true);
    // A metric these rules do not count (zz), a distinct count as a counter (uv in rows), a counter as a distinct count
    // (v in distinct) are left out, as these rules would roll the events up; the rest counts, once (a dedupe record).
    expect(await redisTotals('S', 'S')).toEqual({ '2023-152|v': '2', '2024-366|v': '2' });
    const [live] = await buckets.sketches.read('S', ['S']);
    expect(live!.map((x) => x.field)).toEqual(['2024-366|uv']);
    for (const b of ['other', 'uvcount', 'vsketch']) expect(await redis.exists(buckets.keys.batch('S', b))).toBe(1);
    const rejected = Object.fromEntries((await metrics.batchesRejected.get()).values.map((v) => [v.labels.reason, v.value]));
    expect(rejected).toEqual({ payload: 2 });
    expect((await metrics.fieldsDropped.get()).values[0]!.value).toBe(3);
  });

  it('moves an unprocessable batch to the failed set with its reason, and keeps going', async () => {
    const w = worker();
    await queues[QUEUE.events].add(QUEUE.events, {
      batchId: 'x',
      store: 'S',
      receivedAt: Date.now(),
      events: [{ type: 'teleport', ts: 1, dims: {} }],
    });
    await queues[QUEUE.events].add(QUEUE.events, { nonsense: true });
    await enqueue(queues, QUEUE.events, { batchId: 'ok', store: 'S', receivedAt: Date.now(), events: [view('2023-05-03T10:00:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await failedReasons()).toEqual(['batch x: unknown event type "teleport"', expect.stringMatching(/^invalid events payload: /)]);
    expect((await queues[QUEUE.events].getFailed()).every((j) => j.attemptsMade === 1)).toBe(true);
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '1' });
  });

  it('applies 300 batches of 1000 orders of the maximum value exactly (the issue: sums past int64 were lost)', async () => {
    const w = worker();
    const ts = Date.parse('2026-12-01T12:00:00Z');
    const order = { type: 'order', ts, dims: {}, value: '1000000000000' };
    for (let b = 0; b < 300; b++) {
      await enqueue(queues, QUEUE.events, {
        batchId: `b${b}`,
        store: 'S',
        receivedAt: Date.now(),
        events: Array.from({ length: 1000 }, () => order),
      });
    }
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    // 300000000000000000 in minor units (scale 2).
    expect(await redisTotals('S', 'S')).toEqual({ '2026-335|o': '300000', '2026-335|r': '30000000000000000000' });
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(0);
  });

  it('refuses whole a batch accepted longer ago than the dedupe window, unless the dlq tool marked it', async () => {
    const accepted = Date.now();
    let clock = accepted;
    const w = worker({ now: () => clock });
    const data = { batchId: 'old', store: 'S', receivedAt: accepted, events: [view('2023-05-03T10:00:00Z')] };
    await enqueue(queues, QUEUE.events, data, { jobId: 'first' });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    // A window (the worker's 3600 s) later, the batch's dedupe record has expired: a copy of it must not count again.
    clock = accepted + 3_600_000;
    await redis.del(buckets.keys.batch('S', 'old'));
    await enqueue(queues, QUEUE.events, data, { jobId: 'copy' });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    const [copy] = await queues[QUEUE.events].getFailed();
    expect(copy!.failedReason).toMatch(
      /^batch old: accepted 3600 s ago, past the dedupe window \(DEDUPE_WINDOW_SECONDS=3600\): a store deletion or visitor erasure .*; not applied \(nothing written\)\. If it was never applied .*--past-dedupe-window`$/,
    );
    // Started again (a retry, a stalled job, a replay that kept its starts), it says so.
    await copy!.retry('failed');
    await waitForQueuesIdle([queues[QUEUE.events]]);
    expect((await queues[QUEUE.events].getFailed())[0]!.failedReason).toMatch(/^batch old: accepted 3600 s ago, .*: it was started before/);
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '1' });
    expect((await metrics.batchesRejected.get()).values).toEqual([
      expect.objectContaining({ labels: { reason: 'dedupe_window' }, value: 2 }),
    ]);
    // Marked by the operator (dlq replay --past-dedupe-window), a batch past the window is applied.
    await enqueue(queues, QUEUE.events, { ...data, batchId: 'marked', pastDedupeWindow: true }, { jobId: 'marked' });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '2' });
  });

  it('sends a batch whose sum cannot be held (past 38 digits) whole to the failed set with its reason and a metric', async () => {
    const w = worker();
    const ts = Date.parse('2026-12-01T12:00:00Z');
    await seedMaxRevenue();
    await enqueue(queues, QUEUE.events, {
      batchId: 'big',
      store: 'S',
      receivedAt: Date.now(),
      events: [{ type: 'order', ts, dims: { visitor: 'V' }, value: '1' }],
    });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    const failed = await queues[QUEUE.events].getFailed();
    expect(failed.map((j) => j.failedReason)).toEqual([
      expect.stringMatching(/^batch big of store S not applied \(nothing written\): TALLY_ERR_SUM_OVERFLOW S 2026-335\|r/),
    ]);
    expect(failed[0]!.attemptsMade).toBe(1);
    // Nothing of it landed: not the visitor row, not the order count, and no dedupe record that would hide a replay.
    expect(await redisTotals('S', 'S')).toEqual({ '2026-335|r': String(10n ** 38n - 1n) });
    expect(await redisTotals('S', 'S#visitor#V')).toEqual({});
    expect(await redis.exists(buckets.keys.batch('S', 'big'))).toBe(0);
    expect((await metrics.batchesRejected.get()).values).toEqual([expect.objectContaining({ labels: { reason: 'overflow' }, value: 1 })]);
    // Nor its distinct members (the visitor in the store row's UniqueVisitors).
    expect(await buckets.sketches.read('S', ['S'])).toEqual([[]]);
    expect(await redis.keys('t:{S}:u*')).toEqual([]);
  });

  it("adds a batch's distinct members after its apply: none for a refused batch, and on the retry of one that crashed in between", async () => {
    const ts = Date.parse('2026-12-01T12:00:00Z');
    // A rolled-up batch whose apply is refused (a sum past 38 digits) carries members: none is added.
    await seedMaxRevenue();
    const orders = [{ type: 'order', ts, dims: { visitor: 'V1' }, value: '1' }];
    await enqueue(queues, QUEUE.events, {
      batchId: 'refused',
      store: 'S',
      receivedAt: Date.now(),
      rows: flattenRows(rollup(rules, 'S', 'UTC', orders)),
      distinct: flattenDistinct(rollupDistinct(rules, 'S', 'UTC', orders)),
      count: 1,
    });
    const w = worker();
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect((await queues[QUEUE.events].getFailed()).map((j) => j.data.batchId)).toEqual(['refused']);
    expect(await redis.keys('t:{S}:u*')).toEqual([]);
    // A crash right after the apply (before the members were added): the retry finds the batch applied and adds them.
    let crashes = 0;
    const crashing = worker({
      concurrency: 1,
      crash: (point) => {
        if (point === 'aggregator:after-apply' && crashes++ === 0) throw new Error('crashed');
      },
    });
    const views = [view('2026-12-01T12:00:00Z', 'P1', 'V2')];
    await enqueue(queues, QUEUE.events, { batchId: 'crashed', store: 'S', receivedAt: Date.now(), events: views }, { jobId: 'crashed' });
    await waitForQueuesIdle([queues[QUEUE.events]], { includeDelayed: true }); // its retry after the backoff
    await crashing.close();
    expect(crashes).toBe(2);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
    const [live] = await buckets.sketches.read('S', ['S']);
    expect(live!.map((x) => [x.field, x.blob.length])).toEqual([['2026-335|uv', 1 + 8]]);
  });

  it('sends a batch that meets a key of the wrong type whole to the failed set, counted as redis_state', async () => {
    const w = worker();
    // A product's ranking zset of the day written as a string (no real traffic does that).
    await redis.set('t:{S}:k:2023-123:v:product', 'not a zset');
    await enqueue(queues, QUEUE.events, { batchId: 'wt', store: 'S', receivedAt: Date.now(), events: [view('2023-05-03T10:00:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    const failed = await queues[QUEUE.events].getFailed();
    expect(failed.map((j) => [j.failedReason, j.attemptsMade])).toEqual([
      [expect.stringMatching(/^batch wt of store S not applied \(nothing written\): .*WRONGTYPE/), 1],
    ]);
    expect((await metrics.batchesRejected.get()).values).toEqual([
      expect.objectContaining({ labels: { reason: 'redis_state' }, value: 1 }),
    ]);
    expect(await redis.exists(buckets.keys.batch('S', 'wt'))).toBe(0);
  });

  it('adds up a rolled-up batch that repeats a field of a row (the payload check lets it through)', async () => {
    const w = worker();
    const big = '1000000000000000'; // past 15 digits: the apply's full path
    await enqueue(queues, QUEUE.events, {
      batchId: 'rep',
      store: 'S',
      receivedAt: Date.now(),
      rows: ['S', 2, '2023-123|v', big, '2023-123|v', big, 'S', 1, '2023-123|v', big],
      count: 3,
    });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
    expect(await redisTotals('S', 'S')).toEqual({ '2023-123|v': '3000000000000000' });
  });
});

describe('sealer tick', () => {
  it('reports as seal lag how late the tick ran after it was due, not how long the store was idle', async () => {
    let clock = 1_000_000;
    const w = worker({ now: () => clock });
    const seal = sealProcessor({ buckets, queues, bucketMs: 1000, metrics, log, now: () => clock });
    const tick = (late: number) => seal(sealJob(0, clock - late - 3000, { delay: 3000 }));
    const batch = async (batchId: string) => {
      await enqueue(queues, QUEUE.events, {
        batchId,
        store: 'S',
        receivedAt: Date.now(),
        events: [view('2023-05-03T10:00:00Z', 'P1', 'V1')],
      });
      await waitForQueuesIdle([queues[QUEUE.events]]);
    };
    await batch('a');
    clock += 1000;
    expect(await tick(250)).toMatchObject({ sealed: 1 });
    expect((await metrics.sealLag.get()).values[0]!.value).toBe(0.25);
    // Three hours idle: the next batch goes into the bucket the last seal opened, three hours ago.
    clock += 3 * 3_600_000;
    await batch('b');
    expect(await tick(2000)).toMatchObject({ sealed: 1 });
    expect((await metrics.sealLag.get()).values[0]!.value).toBe(2);
    await w.close();
  });

  it("skips a tick of a shard past its QUEUE_SHARDS (a newer process's scheduler), refuses a job that is not a seal job", async () => {
    const seal = sealProcessor({ buckets, queues, bucketMs: 1000, metrics, log });
    expect(await seal(sealJob(buckets.shards, 1_000))).toMatchObject({ skipped: true, sealed: 0 });
    await expect(seal(sealJob(-1, 1_000))).rejects.toThrow(UnrecoverableError);
  });

  it('seals across bucket boundaries, folds in order and schedules one flush per due row', async () => {
    let clock = 1_000_000;
    const w = worker({ now: () => clock });
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => clock };
    await enqueue(queues, QUEUE.events, {
      batchId: 'a',
      store: 'S',
      receivedAt: Date.now(),
      events: [view('2023-05-03T23:59:59Z', 'P1', 'V1')],
    });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    clock += 1000;
    expect(await sealTick(deps)).toMatchObject({ sealed: 1, folded: 1, rows: 3 });
    await enqueue(queues, QUEUE.events, {
      batchId: 'b',
      store: 'S',
      receivedAt: Date.now(),
      events: [view('2023-05-04T00:00:00Z', 'P1', 'V1')],
    });
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
    expect(await readBacklog(buckets, clock)).toEqual({
      dirtyRows: 3,
      outboxEntries: 8,
      oldestUnfoldedAgeSeconds: 0,
      flushLagSeconds: (clock - 1_001_000) / 1000,
    });
    // Default rules: the store row is written hourly, the visitor once idle 30 min, products once a day.
    expect(await queues[QUEUE.dynamoWrites].count()).toBe(0);
    clock += 3_600_000;
    const t = await sealTick(deps);
    expect(t.flushes).toBe(2); // store (hourly), visitor (idle for 30 min)
    // Leased while their jobs are pending: not handed out again until the lease ends.
    expect(await sealTick(deps)).toMatchObject({ stores: 0, flushes: 0 });
    expect(await queues[QUEUE.dynamoWrites].count()).toBe(2);
    clock += 86_400_000;
    // The two leases ended: handed out again under the same ids (no duplicate jobs), with the product row.
    expect((await sealTick(deps)).flushes).toBe(3);
    const jobs = await queues[QUEUE.dynamoWrites].getWaiting();
    expect(jobs.map((j) => j.data.pk).sort()).toEqual(['S', 'S#product#P1', 'S#visitor#V1']);
  });

  it('counts a batch in the backlog gauges from its apply on, before any tick, and reads 0 only once it is all written', async () => {
    let clock = 1_000_000;
    const w = worker({ now: () => clock });
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => clock };
    // Batch a applied by a job that crashed before its registration, then its retry: a duplicate, registered at 1_000_200.
    const d = new Map([
      ['S', new Map([['2023-123|v', 1n]])],
      ['S#product#P1', new Map([['2023-123|v', 1n]])],
    ]);
    await buckets.apply('S', 'a', d, { now: clock, dedupeTtlSeconds: 3600 });
    clock = 1_000_200;
    await enqueue(queues, QUEUE.events, { batchId: 'a', store: 'S', receivedAt: Date.now(), events: [view('2023-05-03T10:00:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(1);
    // Batch b applied at 1_000_400: the store's oldest unfolded time stays the earlier one.
    clock = 1_000_400;
    await enqueue(queues, QUEUE.events, { batchId: 'b', store: 'S', receivedAt: Date.now(), events: [view('2023-05-03T10:00:00Z')] });
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    // The counts are in the open bucket only, and no tick has run: the gauges say so.
    clock = 1_000_600;
    expect(await readBacklog(buckets, clock)).toEqual({
      dirtyRows: 0,
      outboxEntries: 0,
      oldestUnfoldedAgeSeconds: 0.4,
      flushLagSeconds: 0.4,
    });
    clock = 1_001_000;
    expect(await sealTick(deps)).toMatchObject({ sealed: 1, folded: 1, rows: 2 });
    expect(await readBacklog(buckets, clock)).toEqual({ dirtyRows: 2, outboxEntries: 2, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 });
    await writeRows(buckets, 'S', ['S', 'S#product#P1'], clock);
    clock += 1000;
    expect(await readBacklog(buckets, clock)).toEqual({ dirtyRows: 0, outboxEntries: 0, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 });
    expect(await sealTick(deps)).toMatchObject({ stores: 1, retired: 1 });
  });
});

describe('the sealer work set', () => {
  /** Applies one view for each store straight through the bucket store, as the events processor does. */
  async function applyViews(stores: string[], at: number, batch: string) {
    for (const store of stores) {
      const deltas = new Map([[store, new Map([['2023-123|v', 1n]])]]);
      await buckets.apply(store, `${batch}-${store}`, deltas, { now: at, dedupeTtlSeconds: 3600 });
      await buckets.registerStore(store);
    }
  }
  /** The writer: every dirty row of the store written and acked, then the store's backlog published (and a visit asked for). */
  async function writeAll(store: string, at: number) {
    await writeRows(
      buckets,
      store,
      (await buckets.dueRows(store, Number.MAX_SAFE_INTEGER)).map((r) => r.pk),
      at,
    );
  }

  it('visits only stores with something due, and retires a store once it is all written', async () => {
    let clock = 5_000_000;
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => clock, concurrency: 3 };
    const stores = Array.from({ length: 10 }, (_, i) => `W${i}`);
    await applyViews(stores, clock, 'a');
    clock += 1000;
    expect(await sealTick(deps)).toMatchObject({ stores: 10, sealed: 10, folded: 10, rows: 10, retired: 0 });
    expect(await readBacklog(buckets, clock)).toMatchObject({ dirtyRows: 10, outboxEntries: 10, oldestUnfoldedAgeSeconds: 0 });
    for (const s of stores.slice(0, 7)) await writeAll(s, clock);
    // The writer's publish moves the gauges at once, before any tick.
    expect(await readBacklog(buckets, clock)).toMatchObject({ dirtyRows: 3, outboxEntries: 3 });
    clock += 1000;
    // The written stores are visited (and retired); the other three wait for their rows' flush time.
    expect(await sealTick(deps)).toMatchObject({ stores: 7, sealed: 0, retired: 7 });
    // New events for one retired store: it is back; the other six are never looked at again.
    await applyViews(['W0'], clock, 'b');
    clock += 1000;
    expect(await sealTick(deps)).toMatchObject({ stores: 1, sealed: 1, retired: 0 });
    expect((await buckets.activeStores(0)).map((a) => a.store).sort()).toEqual(['W0', 'W7', 'W8', 'W9']);
    for (const s of ['W0', 'W7', 'W8', 'W9']) await writeAll(s, clock);
    clock += 1000;
    expect(await sealTick(deps)).toMatchObject({ stores: 4, retired: 4 });
    expect(await sealTick(deps)).toMatchObject({ stores: 0 });
    expect(await readBacklog(buckets, clock)).toEqual({ dirtyRows: 0, outboxEntries: 0, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 });
  });

  it('never retires a store that got a batch after the tick read its mark', async () => {
    await applyViews(['R'], 1_000, 'a');
    const [{ mark }] = (await buckets.activeStores(0)) as [{ store: string; mark: string }];
    const empty = { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined };
    await buckets.registerStore('R'); // an apply landed meanwhile
    expect(await buckets.publishBacklog('R', empty, mark)).toBe('published');
    const [{ mark: now }] = (await buckets.activeStores(0)) as [{ store: string; mark: string }];
    expect(await buckets.publishBacklog('R', empty, now)).toBe('retired');
    // A late publish (a writer's, say) cannot bring a retired store back into the gauges.
    expect(await buckets.publishBacklog('R', { ...empty, rows: 5, entries: 9 }, undefined)).toBe('absent');
    expect(await readBacklog(buckets, 2_000)).toMatchObject({ dirtyRows: 0, outboxEntries: 0 });
  });

  it('keeps an apply’s unfolded time through a publish that read the store before the apply (a tick’s, a writer’s)', async () => {
    let clock = 10_000;
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => clock };
    await buckets.registerStore('U');
    const [{ mark }] = (await buckets.activeStores(0)) as [{ store: string; mark: string }];
    const before = await buckets.storeBacklog('U'); // nothing yet
    const { seq } = await buckets.apply('U', 'a', new Map([['U', new Map([['2023-123|v', 1n]])]]), { now: clock, dedupeTtlSeconds: 60 });
    await buckets.registerStore('U', seq, clock);
    clock += 500;
    expect(await buckets.publishBacklog('U', before, mark, undefined)).toBe('published');
    expect(await buckets.publishBacklog('U', before)).toBe('published');
    expect(await readBacklog(buckets, clock)).toMatchObject({ oldestUnfoldedAgeSeconds: 0.5, flushLagSeconds: 0.5 });
    // The tick that reads the store after the apply seals and folds it, and publishes what is left exactly.
    clock += 500;
    expect(await sealTick(deps)).toMatchObject({ stores: 1, sealed: 1, folded: 1 });
    expect(await readBacklog(buckets, clock)).toEqual({ dirtyRows: 1, outboxEntries: 1, oldestUnfoldedAgeSeconds: 0, flushLagSeconds: 0 });
  });

  it('visits a store when its next visit time comes, and never later than an apply after the tick read its mark asks', async () => {
    const b = { rows: 1, entries: 1, oldestDirty: 1, oldestUnfolded: undefined };
    await buckets.registerStore('N', 5_000);
    expect((await buckets.dueStores(0, 4_999)).map((a) => a.store)).not.toContain('N');
    const [{ mark }] = (await buckets.dueStores(0, 5_000)).filter((a) => a.store === 'N') as [{ store: string; mark: string }];
    // The tick's publish sets the time when no apply came meanwhile (later too) ...
    expect(await buckets.publishBacklog('N', b, mark, 90_000)).toBe('published');
    expect((await buckets.visitTimes(0)).get('N')).toBe(90_000);
    // ... and an apply moves it earlier; a publish with the older mark can then only move it earlier still.
    await buckets.registerStore('N', 7_000);
    await buckets.registerStore('N', 8_000);
    expect((await buckets.visitTimes(0)).get('N')).toBe(7_000);
    expect(await buckets.publishBacklog('N', b, mark, 90_000)).toBe('published');
    expect((await buckets.visitTimes(0)).get('N')).toBe(7_000);
    expect(await buckets.publishBacklog('N', b, mark, 6_000)).toBe('published');
    expect((await buckets.visitTimes(0)).get('N')).toBe(6_000);
    // A writer's publish (no mark) leaves it; retiring removes it.
    expect(await buckets.publishBacklog('N', b, undefined, undefined)).toBe('published');
    expect((await buckets.visitTimes(0)).get('N')).toBe(6_000);
    const [{ mark: latest }] = (await buckets.dueStores(0, 6_000)).filter((a) => a.store === 'N') as [{ store: string; mark: string }];
    expect(await buckets.publishBacklog('N', { ...b, rows: 0, entries: 0, oldestDirty: undefined }, latest, 90_000)).toBe('retired');
    expect((await buckets.visitTimes(0)).has('N')).toBe(false);
    // A work set written before visit times existed: its stores are due at once.
    await redis.zincrby(`${buckets.keys.work(0)}active`, 1, 'OLD');
    expect((await buckets.dueStores(0, 10_000)).map((a) => a.store)).toContain('OLD');
    expect((await buckets.visitTimes(0)).get('OLD')).toBe(10_000);
  });

  it('reads the gauges with the same Redis commands for 1 store as for 300', async () => {
    const commands = async () => {
      const info = await redis.info('commandstats');
      return [...info.matchAll(/calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
    };
    const cost = async () => {
      const before = await commands();
      await readBacklog(buckets, 10_000);
      return (await commands()) - before - 1; // minus the INFO of `before`
    };
    const deps = { buckets, queues, bucketMs: 1000, metrics, log, now: () => 9_000 };
    await applyViews(['C0'], 7_000, 'a');
    await sealTick(deps);
    const one = await cost();
    await applyViews(
      Array.from({ length: 300 }, (_, i) => `C${i}`),
      8_000,
      'b',
    );
    await sealTick(deps);
    expect(await readBacklog(buckets, 10_000)).toMatchObject({ dirtyRows: 300, outboxEntries: 300 });
    expect(await cost()).toBe(one);
  });

  it('refuses a batch for a store with no tenant whole, with its reason, a metric and a mark, and counts it once replayed after the tenant exists', async () => {
    const tenants = new Map<string, string>();
    const lookups: boolean[] = [];
    const directory = {
      tenant: async (store: string, o?: { fresh?: boolean }) => {
        lookups.push(o?.fresh === true);
        const tz = tenants.get(store);
        return tz === undefined ? undefined : { store, timeZone: tz };
      },
    };
    const marks = storeMarks(redis, 't', 60_000, () => 1_700_000_000_000);
    const w = worker({ timeZoneOf: tenantTimeZones(directory, marks), unknownStores: marks });
    await enqueue(
      queues,
      QUEUE.events,
      { batchId: 'ghost-1', store: 'GHOST', receivedAt: Date.now(), events: [view('2023-06-01T05:00:00Z')] },
      { jobId: 'ghost-1' },
    );
    await waitForQueuesIdle([queues[QUEUE.events]]);
    const [failed] = await queues[QUEUE.events].getFailed();
    expect(failed!.failedReason).toBe(
      'unknown store GHOST: it has no tenant; batch ghost-1 not applied (nothing written). Create the tenant, then replay this job',
    );
    expect(failed!.attemptsMade).toBe(1);
    expect(lookups).toEqual([false, true]); // looked up again, past any cache, before refusing
    expect((await metrics.batchesRejected.get()).values).toEqual([
      expect.objectContaining({ labels: { reason: 'unknown_store' }, value: 1 }),
    ]);
    // Nothing of it in Redis but the mark (with the time of the refusal, expiring): no phantom store.
    expect(await redisTotals('GHOST', 'GHOST')).toEqual({});
    expect(await redis.keys('*GHOST*')).toEqual([buckets.keys.unknownStore('GHOST')]);
    expect(await redis.get(buckets.keys.unknownStore('GHOST'))).toBe('1700000000000');
    expect(await redis.pttl(buckets.keys.unknownStore('GHOST'))).toBeGreaterThan(50_000);

    // The tenant is created (in Los Angeles) and the job replayed: counted in the store's own zone, mark lifted.
    tenants.set('GHOST', 'America/Los_Angeles');
    await failed!.retry('failed');
    await waitForQueuesIdle([queues[QUEUE.events]]);
    await w.close();
    expect(await redisTotals('GHOST', 'GHOST')).toEqual({ '2023-151|v': '1' }); // May 31 in Los Angeles
    expect(await redis.exists(buckets.keys.unknownStore('GHOST'))).toBe(0);
    expect(await queues[QUEUE.events].getFailedCount()).toBe(0);
    // And the tenant's zone is published for @tally/client, expiring.
    expect(await redis.get(buckets.keys.storeZone('GHOST'))).toBe('America/Los_Angeles');
    expect(await redis.pttl(buckets.keys.storeZone('GHOST'))).toBeGreaterThan(STORE_ZONE_TTL_MS - 60_000);
    // Its rules' fingerprint too (main publishes it at start and every half expiry): clients with other rules send events.
    await marks.rules(rules.fingerprint);
    expect(await redis.get(buckets.keys.rules)).toMatch(/^[0-9a-f]{16}$/);
    await marks.dedupeWindow(3_600);
    expect(await redis.get(buckets.keys.dedupeWindow)).toBe('3600');
    expect(await redis.pttl(buckets.keys.rules)).toBeGreaterThan(STORE_ZONE_TTL_MS - 60_000);
  });

  it("publishes a tenant's time zone for the clients when first found, at once when it changes, and after half its expiry", async () => {
    const zones = new Map([['S1', 'Europe/Paris']]);
    const directory = { tenant: async (store: string) => (zones.has(store) ? { store, timeZone: zones.get(store)! } : undefined) };
    const calls: string[] = [];
    const marks = {
      clear: async (s: string) => void calls.push(`clear ${s}`),
      zone: async (s: string, z: string) => void calls.push(`${s} ${z}`),
    };
    let t = 1_000_000;
    const timeZoneOf = tenantTimeZones(directory, marks, { now: () => t });
    expect(await timeZoneOf('S1')).toBe('Europe/Paris');
    expect(await timeZoneOf('S1')).toBe('Europe/Paris');
    expect(calls).toEqual(['clear S1', 'S1 Europe/Paris']); // once, not per batch
    zones.set('S1', 'Asia/Tokyo'); // npm run tenants -- set-time-zone, seen once the directory's cache has it
    expect(await timeZoneOf('S1')).toBe('Asia/Tokyo');
    t += STORE_ZONE_TTL_MS / 2 - 1;
    await timeZoneOf('S1');
    t += 1;
    await timeZoneOf('S1');
    expect(calls.slice(2)).toEqual(['S1 Asia/Tokyo', 'S1 Asia/Tokyo']);
    expect(await timeZoneOf('NOPE')).toBeUndefined();
    expect(calls).toHaveLength(4);
  });
});
