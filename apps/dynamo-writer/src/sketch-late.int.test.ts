// Distinct-count members (UniqueVisitors) that reach Redis after their row was flushed: a batch whose job crashed
// between its apply and its members, retried after the flush, or members added while a flush of their row wrote. They
// must still reach DynamoDB and leave Redis, though the row gets no other count (docs/DESIGN.md "Unique visitors").
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, fromStoredSketch } from '@tally/dynamo';
import { compileRules, defaultRules, rollup, rollupDistinct } from '@tally/schema';
import { createTestTable, startDynalite, startRedis, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
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
async function setup(store: string) {
  const table = await createTestTable(dyn.endpoint);
  const buckets = new BucketStore({ redis, rules, prefix: 't' });
  const metrics = createWriterMetrics(new Registry());
  let clock = T0;
  let afterUpdate: (() => Promise<void>) | undefined;
  const dynamo = { client, table, meter: createDynamoMeter(), afterUpdate: async () => afterUpdate?.() };
  const flush = flushProcessor({ buckets, dynamo, metrics, log: pino({ level: 'silent' }), maxBackoffMs: 300, now: () => clock });
  const views = (at: number, visitor: string) => [{ type: 'view', ts: at, dims: { product: 'P1', visitor } }];
  return {
    buckets,
    metrics,
    at: (t: number) => void (clock = t),
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
      const r = await buckets.apply(store, id, rollup(rules, store, 'UTC', events), { now: clock, dedupeTtlSeconds: 86_400 });
      if (o.crash) return r;
      await buckets.sketches.add(store, rollupDistinct(rules, store, 'UTC', events), clock, r.seq);
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
    async cell(pk: string) {
      const item = await client.send(
        new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: 'M2026-12' } }, ConsistentRead: true }),
      );
      const uv = item.Item?.['D337.uv']?.B;
      const [u] = uv ? await buckets.sketches.union(store, [[fromStoredSketch(uv)]], false) : [{ count: 0 }];
      return { v: Number(item.Item?.['D337.v']?.N ?? 0), uv: u!.count };
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
