import { GetItemCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import {
  childSk,
  createDynamoClient,
  createDynamoMeter,
  getItem,
  SpilledItems,
  writeRow,
  writeRowWithSketches,
  type CountEntry,
} from '@tally/dynamo';
import { compileRules, defaultRules, rollup, rollupDistinct, type NormalizedEvent } from '@tally/schema';
import { createTestTable, startDynalite, startRedis, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explicitRange, readSeries, readTotals, resolveMetrics, type QueryDeps } from './index';

let server: RedisHandle;
let dyn: DynaliteHandle;
let redis: Redis;
let client: DynamoDBClient;
const meter = createDynamoMeter();
const rules = compileRules(defaultRules);
const DAY = 86_400_000;
// A fixed instant: every range below is explicit, so the answers do not depend on the wall clock.
const D1 = Date.parse('2026-03-09T12:00:00Z');

beforeAll(async () => {
  server = await startRedis();
  dyn = await startDynalite();
  redis = new Redis(server.url);
  client = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1' });
});
afterAll(async () => {
  await redis.quit();
  client.destroy();
  await dyn.stop();
  await server.stop();
});

async function setup(prefix: string): Promise<QueryDeps & { table: string }> {
  const table = await createTestTable(dyn.endpoint);
  return { table, buckets: new BucketStore({ redis, rules, prefix }), dynamo: { client, table, meter }, rules };
}

const views = (ts: number, product: string, from: number, to: number): NormalizedEvent[] =>
  Array.from({ length: to - from }, (_, i) => ({ type: 'view', ts: ts + i, dims: { product, visitor: `V${from + i}` } }));

/** The aggregator's path: distinct members first, then the counts. */
async function send(deps: QueryDeps, id: string, events: NormalizedEvent[]) {
  await deps.buckets.sketches.add('S', rollupDistinct(rules, 'S', 'UTC', events));
  await deps.buckets.apply('S', id, rollup(rules, 'S', 'UTC', events), { now: D1, dedupeTtlSeconds: 3600 });
}

/**
 * The writer's path for one row; `ack: false` is a crash between the DynamoDB write and the acks. `dynamo`: the
 * writer's DynamoDB (the test's by default).
 */
async function flush(deps: QueryDeps, pk: string, ack = true, dynamo = deps.dynamo) {
  const out = await deps.buckets.readOutbox('S', pk);
  const [live] = await deps.buckets.sketches.read('S', [pk]);
  const before = meter.totals().requests['UpdateItem:ok'] ?? 0;
  const r = await writeRowWithSketches(dynamo, (g, w) => deps.buckets.sketches.union('S', g, w), pk, out.entries, live!);
  if (ack) {
    await deps.buckets.sketches.ack('S', pk, r.sketchesWritten);
    await deps.buckets.ackOutbox(
      'S',
      pk,
      out.entries.map((e) => e.field),
      D1,
    );
  }
  return {
    updates: (meter.totals().requests['UpdateItem:ok'] ?? 0) - before,
    sketchUpdates: r.sketchUpdates,
    sketches: r.sketchesWritten.length,
  };
}

const uv = resolveMetrics(rules, ['UniqueVisitors', 'ViewCount']);
const march = explicitRange('2026-03-01', '2026-03-31');

async function answers(deps: QueryDeps) {
  const days = await readSeries(deps, {
    store: 'S',
    pk: 'S',
    metrics: uv,
    range: explicitRange('2026-03-09', '2026-03-10'),
    granularity: 'day',
  });
  const month = await readSeries(deps, { store: 'S', pk: 'S', metrics: uv, range: march, granularity: 'month' });
  const year = await readSeries(deps, { store: 'S', pk: 'S', metrics: uv, range: march, granularity: 'year' });
  const all = await readSeries(deps, { store: 'S', pk: 'S', metrics: uv, range: 'all', granularity: 'total' });
  const last7 = await readTotals(deps, { store: 'S', pks: ['S'], metrics: uv, range: explicitRange('2026-03-04', '2026-03-10') });
  const products = await readTotals(deps, { store: 'S', pks: ['S#product#P1', 'S#product#P2'], metrics: uv, range: march });
  const n = (v: Record<string, bigint>) => Number(v['UniqueVisitors']);
  return {
    days: days.points.map((p) => n(p.values)),
    daysTotal: n(days.totals),
    views: Number(days.totals['ViewCount']),
    month: n(month.points[0]!.values),
    year: n(year.points[0]!.values),
    all: n(all.totals),
    last7: n(last7.rows[0]!.values),
    products: products.rows.map((r) => n(r.values)),
    /** Which answers say their UniqueVisitors are estimates (days, month, year, all, last7, products). */
    estimated: [days, month, year, all, last7, products].map((r) => r.estimated),
    /** The same per point (days, month, year, all) and per row (last7, products). */
    pointsEstimated: [days, month, year, all].map((r) => r.points.map((p) => p.estimated ?? [])),
    rowsEstimated: [last7, products].map((r) => r.rows.map((row) => row.estimated ?? [])),
  };
}

describe('UniqueVisitors', () => {
  it('is exact below the threshold: live, after a crash between write and ack, after the flush, and under replays', async () => {
    const deps = await setup('uv1');
    // Day 1: V0..V149 view P1; day 2: V100..V279 view P2 (100..149 come back): 280 distinct visitors.
    await send(deps, 'b1', views(D1, 'P1', 0, 150));
    await send(deps, 'b2', views(D1 + DAY, 'P2', 100, 280));
    const expected = {
      ...{ days: [150, 180], daysTotal: 280, views: 330, month: 280, year: 280, all: 280, last7: 280, products: [150, 180] },
      estimated: [[], [], [], [], [], []],
      pointsEstimated: [[[], []], [[]], [[]], [[]]],
      rowsEstimated: [[[]], [[], []]],
    };
    expect(await answers(deps)).toEqual(expected);

    await deps.buckets.seal('S', { now: D1 + 2 * DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + 2 * DAY });
    // A crash after the DynamoDB write, before the acks: nothing changes, and the retried flush changes nothing either.
    const crashed = await flush(deps, 'S', false);
    expect(crashed).toEqual({ updates: 2, sketchUpdates: 0, sketches: 2 }); // the sketches rode the counts' 2 UpdateItems
    expect(await answers(deps)).toEqual(expected);
    const retried = await flush(deps, 'S');
    expect(retried.sketches).toBe(2);
    for (const pk of ['S#product#P1', 'S#product#P2']) await flush(deps, pk);
    expect(await answers(deps)).toEqual(expected);
    expect((await deps.buckets.sketches.read('S', ['S']))[0]).toEqual([]);
    const item = await getItem(deps.dynamo, 'S', 'M2026-03');
    expect([...item!.blobs!.keys()].sort()).toEqual(['D068.uv', 'D069.uv', 'M03.uv']);
    expect([...item!.attrs.keys()]).not.toContain('wm.h');

    // A replayed batch adds its members again (its counts are deduplicated): no answer changes.
    await send(deps, 'b1', views(D1, 'P1', 0, 150));
    expect(await answers(deps)).toEqual(expected);
  });

  it('is within 3 standard errors above the threshold, live and after the flush', async () => {
    const deps = await setup('uv2');
    for (let b = 0; b < 10; b++) await send(deps, `b${b}`, views(D1, 'P1', b * 2_000, (b + 1) * 2_000));
    const within = (x: number, n: number) => Math.abs(x - n) / n <= 0.0243;
    const live = await answers(deps);
    expect(within(live.days[0]!, 20_000) && within(live.all, 20_000) && within(live.products[0]!, 20_000)).toBe(true);
    expect(live.estimated).toEqual(Array(6).fill(['UniqueVisitors']));
    // Only the points and rows that hold the 20,000: 2026-03-10 and P2 are exact (none).
    const uvOnly = ['UniqueVisitors'];
    expect([live.pointsEstimated, live.rowsEstimated]).toEqual([
      [[uvOnly, []], [uvOnly], [uvOnly], [uvOnly]],
      [[uvOnly], [uvOnly, []]],
    ]);
    await deps.buckets.seal('S', { now: D1 + DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + DAY });
    expect((await flush(deps, 'S')).updates).toBe(2);
    const flushed = await answers(deps);
    // The same HLL, now from DynamoDB (stored compressed): the same estimates.
    expect(flushed.days[0]).toBe(live.days[0]);
    expect(flushed.all).toBe(live.all);
    expect(flushed.estimated).toEqual(Array(6).fill(['UniqueVisitors']));
    expect([flushed.pointsEstimated, flushed.rowsEstimated]).toEqual([live.pointsEstimated, live.rowsEstimated]);
    const item = await getItem(deps.dynamo, 'S', 'M2026-03');
    const stored = item!.blobs!.get('D068.uv')!;
    expect(String.fromCharCode(stored[0]!)).toBe('Z');
    expect(stored.length).toBeLessThan(12_304);
  });

  it('loses no member when two writers flush the same row at once (the sketch version condition)', async () => {
    const deps = await setup('uv4');
    await send(deps, 'b1', views(D1, 'P1', 0, 120));
    await deps.buckets.seal('S', { now: D1 + DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + DAY });
    await send(deps, 'b2', views(D1 + 1000, 'P1', 100, 240)); // in the open bucket: its members ride with b1's counts
    const [a, b] = await Promise.all([flush(deps, 'S', false), flush(deps, 'S', false)]);
    // Both wrote the sketches: one rode its counts, the other (its counts refused by the watermark) wrote them alone.
    expect(a.sketches + b.sketches).toBe(2);
    expect(a.sketchUpdates + b.sketchUpdates).toBeGreaterThanOrEqual(2);
    await flush(deps, 'S');
    expect((await answers(deps)).days).toEqual([240, 0]);
    await deps.buckets.seal('S', { now: D1 + 2 * DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + 2 * DAY });
    await flush(deps, 'S');
    expect(await deps.buckets.sketches.read('S', ['S'])).toEqual([[]]);
    const r = await answers(deps);
    expect([r.days, r.views, r.all]).toEqual([[240, 0], 260, 240]);
  });

  it('loses no member when a stalled flush acks after another flush acked and a batch re-created the sketch', async () => {
    const deps = await setup('uv5');
    await send(deps, 'b1', views(D1, 'P1', 0, 1)); // V0
    await deps.buckets.seal('S', { now: D1 + DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + DAY });
    // Flush A reads the row's outbox and sketches, then stalls (its job's lock lapsed); flush B runs whole.
    const outbox = await deps.buckets.readOutbox('S', 'S');
    const [live] = await deps.buckets.sketches.read('S', ['S']);
    await flush(deps, 'S');
    // A new visitor on the same day re-creates the sketch with as many members as A read; then A goes on.
    await send(deps, 'b2', views(D1 + 1000, 'P1', 1, 2));
    const a = await writeRowWithSketches(deps.dynamo, (g, w) => deps.buckets.sketches.union('S', g, w), 'S', outbox.entries, live!);
    expect(a.sketchesWritten).toHaveLength(1);
    expect(await deps.buckets.sketches.ack('S', 'S', a.sketchesWritten)).toBe(0);
    await deps.buckets.ackOutbox(
      'S',
      'S',
      outbox.entries.map((e) => e.field),
      D1,
    );
    expect((await answers(deps)).days).toEqual([2, 0]);
    await deps.buckets.seal('S', { now: D1 + 2 * DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + 2 * DAY });
    await flush(deps, 'S');
    expect(await deps.buckets.sketches.read('S', ['S'])).toEqual([[]]);
    expect((await answers(deps)).days).toEqual([2, 0]);
  });

  it("reads the items' sketches eventually consistently, and loses no member when such a read is stale", async () => {
    const deps = await setup('uv6');
    /** Each GetItem's key and ConsistentRead; an eventually consistent one answers from `stale` where it holds the key. */
    const reads: string[] = [];
    const stale = new Map<string, Record<string, AttributeValue>>();
    const writer = {
      ...deps.dynamo,
      client: {
        send: async (cmd: unknown) => {
          if (!(cmd instanceof GetItemCommand)) return client.send(cmd as GetItemCommand);
          const { Key, ConsistentRead } = cmd.input;
          const key = `${Key!['pk']!.S}/${Key!['sk']!.S}`;
          reads.push(`${key} ${ConsistentRead ? 'consistent' : 'eventual'}`);
          const earlier = ConsistentRead ? undefined : stale.get(key);
          return earlier ? { Item: earlier, ConsumedCapacity: { CapacityUnits: 0.5 } } : client.send(cmd);
        },
      } as unknown as DynamoDBClient,
    };
    const day = async (n: number, from: number, to: number) => {
      await send(deps, `b${n}`, views(D1 + n * 1000, 'P1', from, to));
      await deps.buckets.seal('S', { now: D1 + n * DAY, minAgeMs: 0 });
      await deps.buckets.foldSealed('S', { now: D1 + n * DAY });
    };

    await day(1, 0, 10);
    const units = meter.totals().readUnits;
    expect(await flush(deps, 'S', true, writer)).toEqual({ updates: 2, sketchUpdates: 0, sketches: 1 });
    // One read of each written item's sketches, eventually consistent: half a read unit each (dynalite's small items).
    expect(reads.sort()).toEqual(['S/M2026-03 eventual', 'S/TOTAL eventual']);
    expect(meter.totals().readUnits - units).toBe(1);
    // What an eventually consistent read could still answer after the next flush: the items as they are now.
    for (const sk of ['M2026-03', 'TOTAL']) {
      const out = await client.send(
        new GetItemCommand({ TableName: deps.table, Key: { pk: { S: 'S' }, sk: { S: sk } }, ConsistentRead: true }),
      );
      stale.set(`S/${sk}`, out.Item!);
    }
    await day(2, 10, 20);
    await flush(deps, 'S');

    await day(3, 20, 30);
    reads.length = 0;
    const r = await flush(deps, 'S', true, writer);
    // Both stale reads held the sketches' first version: both rides refused, the counts written again without them,
    // then each item's sketches read consistently and written on their own.
    expect(r).toEqual({ updates: 4, sketchUpdates: 2, sketches: 1 });
    expect(reads.filter((x) => x.endsWith('eventual')).sort()).toEqual(['S/M2026-03 eventual', 'S/TOTAL eventual']);
    expect(reads.filter((x) => x.endsWith('consistent')).length).toBeGreaterThanOrEqual(2);
    expect(await deps.buckets.sketches.read('S', ['S'])).toEqual([[]]);
    const a = await answers(deps);
    expect([a.days, a.views, a.month, a.all, a.products]).toEqual([[30, 0], 30, 30, 30, [30, 0]]);
  });

  it("reads a spilled item's sketches once and writes them on their own, in its overflow items", async () => {
    const deps = await setup('uv7');
    const spilled = new SpilledItems();
    const reads: string[] = [];
    const writer = {
      ...deps.dynamo,
      spilled,
      client: {
        send: (cmd: unknown) => {
          if (cmd instanceof GetItemCommand) {
            const { Key, ConsistentRead, ProjectionExpression } = cmd.input;
            const what = ProjectionExpression?.includes('#hv') ? 'sketches' : 'position';
            reads.push(`${Key!['sk']!.S} ${what} ${ConsistentRead ? 'consistent' : 'eventual'}`);
          }
          return client.send(cmd as GetItemCommand);
        },
      } as unknown as DynamoDBClient,
    };
    // Earlier buckets of counters no query here asks for: 12 x 90 attributes with long names spill the month item and TOTAL.
    const junk: CountEntry[] = [];
    for (let seq = 1; seq <= 12; seq++)
      for (let p = 0; p < 90; p++) junk.push({ seq, dayKey: '2026-068', metric: `zz#${'x'.repeat(110)}${seq}-${p}`, value: 1n });
    await writeRow(writer, 'S', junk);
    expect(spilled.has('S', 'M2026-03') && spilled.has('S', 'TOTAL')).toBe(true);

    await send(deps, 'b1', views(D1, 'P1', 0, 10));
    await deps.buckets.seal('S', { now: D1 + DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + DAY });
    reads.length = 0;
    const r = await flush(deps, 'S', true, writer);
    // The counts go to overflow items, and so do the sketches: each base item's read once (eventually consistent)
    // finds it spilled, and each cell's union goes to the overflow item of its attribute, read and written on its own.
    const overflow = [
      ...new Set([childSk('M2026-03', 'D068.uv'), childSk('M2026-03', 'M03.uv'), childSk('TOTAL', 'uv'), childSk('TOTAL', 'Y2026.uv')]),
    ];
    expect(r.sketchUpdates).toBe(overflow.length);
    expect(reads.filter((x) => x.includes('sketches')).sort()).toEqual(
      ['M2026-03', 'TOTAL', ...overflow].map((sk) => `${sk} sketches eventual`).sort(),
    );
    const month = await getItem(deps.dynamo, 'S', 'M2026-03');
    expect(month!.spilled).toBe(true);
    expect(month!.blobs).toBeUndefined();
    expect([...(await getItem(deps.dynamo, 'S', childSk('M2026-03', 'D068.uv')))!.blobs!.keys()]).toContain('D068.uv');
    const a = await answers(deps);
    expect([a.days, a.views, a.month, a.all, a.products]).toEqual([[10, 0], 10, 10, 10, [10, 0]]);

    // A second day: its sketches go to the overflow items too, and every answer unions them with the first day's.
    await send(deps, 'b2', views(D1 + DAY, 'P1', 5, 25));
    await deps.buckets.seal('S', { now: D1 + 2 * DAY, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: D1 + 2 * DAY });
    await flush(deps, 'S', true, writer);
    expect(await deps.buckets.sketches.read('S', ['S'])).toEqual([[]]);
    const b = await answers(deps);
    expect([b.days, b.daysTotal, b.views, b.month, b.all, b.last7, b.products]).toEqual([[10, 20], 25, 30, 25, 25, 25, [25, 0]]);
  });

  it('is refused for an entity the rules do not give it to', async () => {
    const deps = await setup('uv3');
    await expect(readTotals(deps, { store: 'S', pks: ['S#visitor#V1'], metrics: uv, range: march })).rejects.toThrow(
      /UniqueVisitors is not counted for entity visitor/,
    );
  });
});
