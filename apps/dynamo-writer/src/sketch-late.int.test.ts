// Distinct-count members (UniqueVisitors) that reach Redis after their row was flushed: a batch whose job crashed
// between its apply and its members, retried after the flush, or members added while a flush of their row wrote. They
// must still reach DynamoDB and leave Redis, though the row gets no other count (docs/DESIGN.md "Unique visitors").
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, fromStoredSketch } from '@tally/dynamo';
import { compileRules, defaultRules, rollup, rollupDistinct } from '@tally/schema';
import { createTestTable, startDynalite, startRedis, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { GetItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createWriterMetrics, flushProcessor } from './flush.processor';

const MIN = 60_000;
const H = 60 * MIN;
const DAY = 24 * H;
const T0 = Date.UTC(2026, 11, 3); // 2026-12-03 (day 337), midnight UTC: the clock is injected
const NOV30 = Date.UTC(2026, 10, 30); // the last day of a month (day 334), midnight UTC
const rules = compileRules(defaultRules); // store rows hourly, product rows daily, both with UniqueVisitors
let server: RedisHandle;
let dyn: DynaliteHandle;
let redis: Redis;
let client: DynamoDBClient;

beforeAll(async () => {
  server = await startRedis();
  dyn = await startDynalite();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  client = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1', maxAttempts: 3, requestTimeoutMs: 15_000 });
}, 120_000);
afterAll(async () => {
  client.destroy();
  await redis.quit();
  await dyn.stop();
  await server.stop();
});

/** A store of its own on a table of its own: the aggregator's and the sealer's steps, and the writer's flushes. */
async function setup(store: string, o: { rules?: typeof rules; t0?: number } = {}) {
  const table = await createTestTable(dyn.endpoint);
  const r0 = o.rules ?? rules;
  const buckets = new BucketStore({ redis, rules: r0, prefix: 't' });
  const metrics = createWriterMetrics(new Registry());
  const dynamoMetrics = new Registry();
  let clock = o.t0 ?? T0;
  let afterUpdate: (() => Promise<void>) | undefined;
  const dynamo = { client, table, meter: createDynamoMeter(dynamoMetrics), afterUpdate: async () => afterUpdate?.() };
  const flush = flushProcessor({ buckets, dynamo, metrics, log: pino({ level: 'silent' }), maxBackoffMs: 300, now: () => clock });
  const views = (at: number, visitor: string) => [{ type: 'view', ts: at, dims: { product: 'P1', visitor } }];
  return {
    buckets,
    metrics,
    table,
    at: (t: number) => void (clock = t),
    /** The writer's flush of one row (a job of the sealer's, or a stale one). */
    flush: (pk: string) => flush({ id: `f-${pk}`, data: { store, pk }, attemptsStarted: 1 } as unknown as Job),
    /** DynamoDB requests the writer made. */
    requests: async () =>
      (await dynamoMetrics.getSingleMetric('tally_dynamodb_requests_total')!.get()).values.reduce((n, v) => n + v.value, 0),
    /** Once, during the next UpdateItem of a flush. */
    duringWrite: (f: () => Promise<void>) =>
      void (afterUpdate = async () => {
        afterUpdate = undefined;
        await f();
      }),
    /**
     * The events processor's steps for a batch of one view at `ts` (default now): apply, members (unless it crashes
     * first), register.
     */
    async batch(id: string, visitor: string, o: { ts?: number; crash?: true } = {}) {
      const events = views(o.ts ?? clock, visitor);
      const r = await buckets.apply(store, id, rollup(r0, store, 'UTC', events), { now: clock, dedupeTtlSeconds: 86_400 });
      if (o.crash) return r;
      await buckets.sketches.add(store, rollupDistinct(r0, store, 'UTC', events), clock, r.seq);
      await buckets.registerStore(store, r.seq, clock);
      return r;
    },
    /** A sealer tick: the open bucket sealed and folded, each due row flushed by the writer. Returns those rows. */
    async tick() {
      await buckets.seal(store, { now: clock, minAgeMs: 0 });
      await buckets.foldSealed(store, { now: clock });
      const due = (await buckets.dueRows(store, clock)).map((r) => r.pk).sort();
      for (const pk of due) await flush({ id: `f-${pk}`, data: { store, pk }, attemptsStarted: 1 } as unknown as Job);
      return due;
    },
    /** The count of the day's cell in DynamoDB: views `v` and the size of the unique visitors' sketch `uv`. */
    async cell(pk: string, day = 'M2026-12/D337', metric = 'uv') {
      const [sk, d] = day.split('/');
      const item = await client.send(
        new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: sk! } }, ConsistentRead: true }),
      );
      const uv = item.Item?.[`${d}.${metric}`]?.B;
      const [u] = uv ? await buckets.sketches.union(store, [[fromStoredSketch(uv)]], false) : [{ count: 0 }];
      return { v: Number(item.Item?.[`${d}.v`]?.N ?? 0), uv: u!.count };
    },
    /** What Redis still holds of the store's sketches and dirty rows. */
    left: async () => ({ sketches: (await redis.keys(`t:{${store}}:u*`)).sort(), dirty: await redis.zrange(`t:{${store}}:dirty`, 0, -1) }),
  };
}

it('writes the members of a batch retried after its rows were flushed, and leaves none in Redis', async () => {
  const s = await setup('S1');
  s.at(T0 + 10 * H);
  await s.batch('b1', 'V1');
  s.at(T0 + 10 * H + 15 * MIN);
  expect(await s.tick()).toEqual([]);
  s.at(T0 + 11 * H);
  expect(await s.tick()).toEqual(['S1', 'S1#visitor#V1']);
  // 23:55: V2 views P1; the aggregator dies after the apply, before the members.
  const late = T0 + 23 * H + 55 * MIN;
  s.at(late);
  await s.batch('b2', 'V2', { crash: true });
  s.at(T0 + DAY);
  expect(await s.tick()).toEqual(['S1#product#P1']);
  s.at(T0 + DAY + H);
  expect(await s.tick()).toEqual(['S1', 'S1#visitor#V2']);
  expect(await s.cell('S1#product#P1')).toEqual({ v: 2, uv: 1 });
  // The job's retry, after the flushes: the apply finds the batch applied; its members mark the rows dirty and due.
  s.at(T0 + DAY + H + 5 * MIN);
  expect(await s.batch('b2', 'V2', { ts: late })).toMatchObject({ applied: false });
  expect((await s.left()).dirty).toEqual(['S1', 'S1#product#P1']);
  // Each row's flush, at its policy's time, finds no count and writes the sketches alone.
  s.at(T0 + DAY + 2 * H);
  expect(await s.tick()).toEqual(['S1']);
  s.at(T0 + 2 * DAY);
  expect(await s.tick()).toEqual(['S1#product#P1']);
  expect(await s.cell('S1#product#P1')).toEqual({ v: 2, uv: 2 });
  expect(await s.cell('S1')).toEqual({ v: 2, uv: 2 });
  expect(await s.left()).toEqual({ sketches: [], dirty: [] });
  expect(await s.buckets.storeBacklog('S1')).toMatchObject({ rows: 0, entries: 0 });
  expect((await s.metrics.rowsFlushed.get()).values[0]!.value).toBe(7);
  expect((await s.metrics.emptyFlushes.get()).values[0]?.value ?? 0).toBe(0);
});

it('writes members that came late while a flush of their row wrote, in a flush of their own', async () => {
  const s = await setup('S2');
  s.at(T0 + 10 * H);
  const { seq } = await s.batch('b1', 'V1');
  s.at(T0 + 10 * H + 15 * MIN);
  expect(await s.tick()).toEqual([]);
  s.at(T0 + 11 * H);
  expect(await s.tick()).toEqual(['S2', 'S2#visitor#V1']);
  // While P1's flush writes, members of a batch of its folded bucket come (the batch lost a race with the sealer).
  s.duringWrite(async () => {
    const late = [{ type: 'view', ts: T0 + 10 * H, dims: { product: 'P1', visitor: 'V2' } }];
    await s.buckets.sketches.add('S2', rollupDistinct(rules, 'S2', 'UTC', late), T0 + DAY, seq);
  });
  s.at(T0 + DAY);
  expect(await s.tick()).toEqual(['S2#product#P1']);
  expect(await s.cell('S2#product#P1')).toEqual({ v: 1, uv: 1 });
  // The flush left P1 dirty again, due by its policy; the store row, clean, was marked by the members themselves.
  expect(await s.buckets.flushTime('S2', 'S2#product#P1')).toBe(T0 + 2 * DAY);
  s.at(T0 + DAY + H);
  expect(await s.tick()).toEqual(['S2']);
  s.at(T0 + 2 * DAY);
  expect(await s.tick()).toEqual(['S2#product#P1']);
  expect(await s.cell('S2#product#P1')).toEqual({ v: 1, uv: 2 });
  expect(await s.cell('S2')).toEqual({ v: 1, uv: 2 });
  expect(await s.left()).toEqual({ sketches: [], dirty: [] });
});

it('writes late members of the last day of a month though the row next flushes counts of the new month only', async () => {
  const s = await setup('S3', { t0: NOV30 + 10 * H });
  let clock = NOV30 + 10 * H;
  /** Sealer ticks (and the writer's flushes) every 5 minutes up to `to`. */
  const until = async (to: number) => {
    for (; ; clock = Math.min(clock + 5 * MIN, to)) {
      s.at(clock);
      await s.tick();
      if (clock >= to) return;
    }
  };
  await s.batch('b1', 'V1');
  // 23:55 on Nov 30: V2's batch dies after its apply, before its members.
  const late = NOV30 + 23 * H + 55 * MIN;
  await until(late);
  await s.batch('b2', 'V2', { crash: true });
  await until(NOV30 + DAY + MIN); // both rows flushed November's counts (the visitor rows flush by their own policy)
  expect((await s.left()).dirty.filter((pk) => !pk.includes('#visitor#'))).toEqual([]);
  expect(await s.cell('S3#product#P1', 'M2026-11/D334')).toEqual({ v: 2, uv: 1 });
  // Its retry: the rows are marked dirty and due; December's views reach both rows before their flushes.
  await until(NOV30 + DAY + 5 * MIN);
  expect(await s.batch('b2', 'V2', { ts: late })).toMatchObject({ applied: false });
  expect((await s.left()).dirty.filter((pk) => !pk.includes('#visitor#'))).toEqual(['S3', 'S3#product#P1']);
  await until(NOV30 + DAY + 10 * MIN);
  await s.batch('b3', 'V3');
  await until(NOV30 + 2 * DAY + 5 * MIN);
  // Those flushes carry December's counts only: V2's November sketches are written on their own, in the same flush.
  expect(await s.cell('S3#product#P1', 'M2026-11/D334')).toEqual({ v: 2, uv: 2 });
  expect(await s.cell('S3', 'M2026-11/D334')).toEqual({ v: 2, uv: 2 });
  expect(await s.cell('S3#product#P1', 'M2026-12/D335')).toEqual({ v: 1, uv: 1 });
  expect(await s.left()).toEqual({ sketches: [], dirty: [] });
});

it('an empty flush of a row whose members did not come late (a stale or repeated job) makes no DynamoDB call', async () => {
  const s = await setup('S4', { t0: T0 + 10 * H });
  await s.batch('b1', 'V1');
  // The bucket is open: no row is dirty, the members wait for its fold. A flush job of the store row comes anyway.
  expect((await s.left()).dirty).toEqual([]);
  expect(await s.flush('S4')).toEqual({ updates: 0, entries: 0 });
  expect(await s.requests()).toBe(0);
  // Nor one of a row whose late members (a duplicate's) wait with an entry of a bucket not completely folded.
  expect(await s.batch('b1', 'V1')).toMatchObject({ applied: false, seq: 0 });
  await redis.hset('t:{S4}:o:S4', `${T0 + DAY}|2026-338|v`, '1');
  expect(await s.flush('S4')).toEqual({ updates: 0, entries: 0 });
  expect(await s.requests()).toBe(0);
  // Once the outbox is empty, the late members are written on their own.
  await redis.hdel('t:{S4}:o:S4', `${T0 + DAY}|2026-338|v`);
  expect(await s.flush('S4')).toMatchObject({ entries: 0, updates: 2 });
  expect(await s.cell('S4')).toEqual({ v: 0, uv: 1 });
});

it('writes the members of a visitor back after an erasure that an empty flush finds under a tombstone item', async () => {
  // Visitors with a distinct count of their own (as libs/query segments.int), their rows flushed every bucket.
  const vrules = compileRules({
    ...defaultRules,
    metrics: { ...defaultRules.metrics, UniqueProducts: { code: 'up', description: 'distinct products a visitor viewed' } },
    entities: {
      ...defaultRules.entities,
      visitor: { ...defaultRules.entities.visitor, flush: { kind: 'bucket' }, distinct: { UniqueProducts: 'product' } },
    },
  });
  const pk = 'S5#visitor#V1';
  const s = await setup('S5', { rules: vrules, t0: T0 + 10 * H });
  // V1 was erased a week ago: its items are tombstones (libs/tenants replaceByTombstones), fenced far below the epoch.
  for (const sk of ['M2026-12', 'TOTAL'])
    await client.send(
      new PutItemCommand({
        TableName: s.table,
        Item: { pk: { S: pk }, sk: { S: sk }, wm: { N: String(T0 - 7 * DAY) }, 'wm.e': { S: new Date(T0 - 7 * DAY).toISOString() } },
      }),
    );
  // Back after the erased window: a batch, then its redelivery (a duplicate: its bucket not known, it counts as late).
  await s.batch('b1', 'V1');
  expect(await s.batch('b1', 'V1')).toMatchObject({ applied: false, seq: 0 });
  // The row, marked dirty and due now, is handed to the writer before its bucket is folded: its outbox is empty.
  expect((await s.buckets.dueRows('S5', T0 + 10 * H)).map((r) => r.pk)).toEqual([pk]);
  expect(await s.flush(pk)).toMatchObject({ entries: 0 });
  expect(await s.cell(pk, 'M2026-12/D337', 'up')).toEqual({ v: 0, uv: 1 });
  // Then the bucket is folded and the counts flushed.
  s.at(T0 + 10 * H + 20 * MIN);
  await s.tick();
  expect(await s.cell(pk, 'M2026-12/D337', 'up')).toEqual({ v: 1, uv: 1 });
  expect((await s.left()).sketches.filter((k) => k.includes('#visitor#'))).toEqual([]);
});

it('leaves unacked the late members of a visitor an empty flush finds under the tombstone of a later erasure', async () => {
  const vrules = compileRules({
    ...defaultRules,
    metrics: { ...defaultRules.metrics, UniqueProducts: { code: 'up', description: 'distinct products a visitor viewed' } },
    entities: {
      ...defaultRules.entities,
      visitor: { ...defaultRules.entities.visitor, flush: { kind: 'bucket' }, distinct: { UniqueProducts: 'product' } },
    },
  });
  const pk = 'S6#visitor#V1';
  const s = await setup('S6', { rules: vrules, t0: T0 + 10 * H });
  await s.batch('b1', 'V1');
  expect(await s.batch('b1', 'V1')).toMatchObject({ applied: false, seq: 0 });
  // A tombstone fenced at the epoch (an erasure after the flush's read, as far as the fence can tell): not written.
  const epoch = Number(await redis.get('t:{S6}:epoch'));
  for (const sk of ['M2026-12', 'TOTAL'])
    await client.send(
      new PutItemCommand({ TableName: s.table, Item: { pk: { S: pk }, sk: { S: sk }, wm: { N: String(epoch - 1) }, 'wm.e': { S: 'x' } } }),
    );
  await s.flush(pk);
  expect(await s.cell(pk, 'M2026-12/D337', 'up')).toEqual({ v: 0, uv: 0 });
  // Nothing written, nothing acked: the members wait in Redis for the flush of their counts.
  expect((await s.buckets.sketches.read('S6', [pk]))[0]).toHaveLength(1);
});

it('an empty flush of a deleted store writes no sketch', async () => {
  const s = await setup('S7', { t0: T0 + 10 * H });
  await s.batch('b1', 'V1');
  expect(await s.batch('b1', 'V1')).toMatchObject({ applied: false, seq: 0 });
  await redis.set('t:{S7}:x', '1'); // the store's tombstone: its deletion began
  expect(await s.flush('S7')).toEqual({ updates: 0, entries: 0 });
  expect(await s.requests()).toBe(0);
});
