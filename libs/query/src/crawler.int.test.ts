import { ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, SPILL_AT_KB, SpilledItems, writeRow } from '@tally/dynamo';
import { compileRules, defaultRules, rollup } from '@tally/schema';
import { createTestTable } from '@tally/testing';
import { dynamoBackends, useDynamoBackendClient, useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { evaluateSegments, explicitRange, readSeries, readTotals, resolveMetrics, type QueryDeps } from './index';
import { flushStore } from './test-fixtures';

// A crawler: one visitor viewing 20,000 distinct products within one month. Its month and TOTAL items would pass
// DynamoDB's 400 KB; they spill into overflow items instead (libs/dynamo overflow.ts), and every answer stays exact.
// Run on dynalite and on AWS's DynamoDB Local (which enforces the item size limit; skipped without java).

// Store and product rows come due only after a day: the test writes the visitor row alone.
const rules = compileRules({
  ...defaultRules,
  entities: {
    store: { key: [], flush: { kind: 'every', minutes: 1440 } },
    product: { key: ['product'], flush: { kind: 'every', minutes: 1440 } },
    visitor: { key: ['visitor'], flush: { kind: 'bucket' } },
    page: { key: ['page'], flush: { kind: 'every', minutes: 1440 }, rank: true },
  },
});
const PRODUCTS = 20_000;
const BUCKETS = 10;
const NOW = Date.parse('2023-05-20T12:00:00Z');
const day = (d: number) => Date.UTC(2023, 4, d, 10);
const view = (ts: number, product: string) => ({ type: 'view', ts, dims: { product, visitor: 'BOT1' } });
const PK = 'S#visitor#BOT1';

/** DynamoDB's size of an item: names plus values (a number: one byte per two significant digits, plus one). */
function itemBytes(item: Record<string, AttributeValue>): number {
  let n = 0;
  for (const [k, v] of Object.entries(item)) n += k.length + (v.S !== undefined ? v.S.length : Math.ceil(v.N!.length / 2) + 1);
  return n;
}

let redis: Redis;
useRedis((r) => void (redis = r));

describe.each(dynamoBackends())('a visitor with $name', (backend) => {
  const { name, skip } = backend;
  const emulator = useDynamoBackendClient(backend, (endpoint) => createDynamoClient({ endpoint, region: 'us-east-1' }));

  it.skipIf(skip)(
    `viewing ${PRODUCTS.toLocaleString('en-US')} distinct products in one month is written exactly, no item near 400 KB`,
    async () => {
      const { client, endpoint } = emulator;
      const table = await createTestTable(endpoint);
      const meter = createDynamoMeter();
      const prefix = `crawl${name.length}`;
      // The writer process remembers the items it saw spilled (as apps/dynamo-writer does).
      const spilled = new SpilledItems();
      const deps: QueryDeps = { buckets: new BucketStore({ redis, rules, prefix }), dynamo: { client, table, meter }, rules };
      const store = 'S';
      await deps.buckets.registerStore(store);
      // Bucket b (on day b + 1) views 2,000 new products and P0 once more. The visitor's flush crashes after its
      // 30th UpdateItem in bucket 4 (the next bucket's flush resumes it) and in the last bucket.
      const expected = new Map<string, bigint>();
      const perProduct = PRODUCTS / BUCKETS;
      let clock = NOW;
      for (let b = 0; b < BUCKETS; b++) {
        const events = [view(day(b + 1), 'P0')];
        for (let p = b * perProduct; p < (b + 1) * perProduct; p++) events.push(view(day(b + 1), `P${p}`));
        for (const ev of events) expected.set(ev.dims.product, (expected.get(ev.dims.product) ?? 0n) + 1n);
        await deps.buckets.apply(store, `b${b}`, rollup(rules, store, 'UTC', events), { now: clock, dedupeTtlSeconds: 3600 });
        clock += 1000;
        const crash = b === 4 || b === BUCKETS - 1;
        await flushStore(deps, store, clock, { spilled, crashAt: (pk) => (crash && pk === PK ? 30 : undefined) });
      }
      const views = BigInt(PRODUCTS + BUCKETS);
      const sample = ['P0', 'P1', `P${perProduct}`, `P${PRODUCTS / 2 + 7}`, `P${PRODUCTS - 1}`];
      const metrics = resolveMetrics(rules, ['ViewCount', ...sample.map((p) => `ProductViews#${p}`)]);
      const want = { ViewCount: views, ...Object.fromEntries(sample.map((p) => [`ProductViews#${p}`, expected.get(p)!])) };

      // The last bucket's visitor row is still partly in Redis (the crash): the merge must count it exactly once.
      const month = explicitRange('2023-05-01', '2023-05-31');
      const check = async () => {
        expect((await readTotals(deps, { store, pks: [PK], metrics, range: month })).rows[0]!.values).toEqual(want);
        expect(
          (await readTotals(deps, { store, pks: [PK], metrics, range: explicitRange('2023-01-01', '2023-12-31') })).rows[0]!.values,
        ).toEqual(want);
        expect((await readSeries(deps, { store, pk: PK, metrics, range: 'all', granularity: 'total' })).totals).toEqual(want);
        const days = await readSeries(deps, { store, pk: PK, metrics, range: month, granularity: 'day' });
        expect(days.totals).toEqual(want);
        expect(days.points.slice(0, BUCKETS).map((p) => p.values['ViewCount'])).toEqual(
          Array.from({ length: BUCKETS }, () => BigInt(perProduct + 1)),
        );
        const seg = await evaluateSegments(deps, {
          store,
          pk: PK,
          timeZone: 'UTC',
          now: NOW,
          cacheTtlSeconds: 60,
          segments: [
            {
              name: 'crawler',
              match: 'all',
              rules: [
                { metric: 'ProductViews', key: 'P0', range: 'allTime', op: '=', value: BUCKETS + 1 },
                { metric: 'ProductViews', key: `P${PRODUCTS - 1}`, range: 'last30d', op: '=', value: 1 },
                { metric: 'ViewCount', range: 'last30d', op: '=', value: PRODUCTS + BUCKETS },
              ],
            },
          ],
        });
        expect(seg.segments[0]!.rules.map((r) => r.actual)).toEqual([String(BUCKETS + 1), '1', String(PRODUCTS + BUCKETS)]);
        expect(seg.segments[0]!.matched).toBe(true);
      };
      expect((await deps.buckets.readOutbox(store, PK)).entries.length).toBeGreaterThan(0);
      await check();
      // The next flush finishes the row; then DynamoDB alone holds every count.
      clock += 1000;
      const out = await deps.buckets.readOutbox(store, PK);
      await writeRow({ ...deps.dynamo, spilled }, PK, out.entries);
      await deps.buckets.ackOutbox(
        store,
        PK,
        out.entries.map((e) => e.field),
        clock,
      );
      expect((await deps.buckets.readOutbox(store, PK)).entries).toEqual([]);
      await check();

      // MAX_ITEMS_PER_QUERY counts overflow items: the month item and its 16 overflow items are 17 items. One item
      // fits the bound before reading; the overflow items, known once it is read, are refused before their round.
      const atMost = (n: number): QueryDeps => ({ ...deps, maxItemsPerQuery: n });
      const reads = (d: QueryDeps) => [
        () => readTotals(d, { store, pks: [PK], metrics, range: month }),
        () => readSeries(d, { store, pk: PK, metrics, range: month, granularity: 'day' }),
        () => readSeries(d, { store, pk: PK, metrics, range: 'all', granularity: 'total' }),
      ];
      for (const read of reads(atMost(16))) {
        await expect(read()).rejects.toMatchObject({
          name: 'QueryError',
          field: 'range',
          message: expect.stringMatching(/at least 17 DynamoDB items .*overflow items.*at most 16 per query/),
        });
      }
      for (const read of reads(atMost(17))) expect((await read()).dynamoRequests).toBeGreaterThan(0);

      // No item anywhere near 400 KB: each at most SPILL_AT_KB plus one UpdateItem's attributes.
      let largest = 0;
      let items = 0;
      let startKey: Record<string, AttributeValue> | undefined;
      do {
        const page = await client.send(new ScanCommand({ TableName: table, ExclusiveStartKey: startKey }));
        for (const it of page.Items ?? []) {
          items++;
          largest = Math.max(largest, itemBytes(it));
        }
        startKey = page.LastEvaluatedKey;
      } while (startKey);
      console.info(
        `${name}: ${PRODUCTS} products in one month: ${items} items, largest ${Math.round(largest / 1024)} KB, ${meter.totals().writeUnits} write units, ${meter.totals().requests['UpdateItem:condition_failed'] ?? 0} UpdateItems refused (each charged as a write of its item), ${meter.totals().requests['GetItem:ok'] ?? 0} GetItems`,
      );
      expect(largest).toBeLessThan((SPILL_AT_KB + 40) * 1024);
    },
    900_000,
  );
});
