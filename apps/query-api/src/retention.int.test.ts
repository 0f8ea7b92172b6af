import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoMeter, writeRow } from '@tally/dynamo';
import { EXPIRES_ATTR, toEpochDay } from '@tally/key-layout';
import { createTenantDirectory, updateTenant, visitorExpiry } from '@tally/tenants';
import { beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture, view } from '../test/fixture';
import type { QueryApiApp } from './app';

// Visitor-history retention: the writer sets a DynamoDB TTL on a visitor's items, and queries and segment rules
// cut at the retention start whatever DynamoDB still holds (dynalite, like DynamoDB Local, never runs TTL, so the
// expired items are still there: exactly the state TTL's lag leaves on AWS for up to days).

const NOW = Date.parse('2024-03-15T12:00:00Z');
const f = useFixture();
let app: QueryApiApp;
let key: string;
const day = (y: number, m: number, d: number) => (toEpochDay({ year: y, month: m, day: d }) + 1) * 86_400;

beforeAll(async () => {
  key = (await f.tenant('SHOP_R')).read;
  await updateTenant(f.db, 'SHOP_R', { historyMonths: 2 }); // March and February 2024 are kept
  await f.apply(
    'SHOP_R',
    'UTC',
    ['2023-12-10', '2024-01-20', '2024-02-05', '2024-03-10'].map((d) => view(`${d}T10:00:00Z`, 'P1', 'V1')),
  );
  // Flush as the writer does, with its expiry.
  const expiryOf = visitorExpiry(createTenantDirectory({ dynamo: f.client, table: f.table, cacheTtlMs: 0 }), () => NOW);
  const later = Date.now() + 3_600_000; // past the fixture's bucket clock
  expect(await f.buckets.seal('SHOP_R', { now: later, minAgeMs: 0 })).toBeDefined();
  await f.buckets.foldSealed('SHOP_R', { now: later });
  for (const { pk } of await f.buckets.dueRows('SHOP_R', Number.MAX_SAFE_INTEGER)) {
    const out = await f.buckets.readOutbox('SHOP_R', pk);
    const expiresAt = await expiryOf('SHOP_R', pk);
    await writeRow({ client: f.client, table: f.table, meter: createDynamoMeter(), ...(expiresAt ? { expiresAt } : {}) }, pk, out.entries);
    await f.buckets.ackOutbox(
      'SHOP_R',
      pk,
      out.entries.map((e) => e.field),
      later,
    );
  }
  app = await f.app({ now: () => NOW });
});

const attr = async (pk: string, sk: string) =>
  (await f.client.send(new GetItemCommand({ TableName: f.table, Key: { pk: { S: pk }, sk: { S: sk } } }))).Item?.[EXPIRES_ATTR]?.N;

describe('visitor-history retention', () => {
  it("the writer sets the TTL attribute on the visitor's items only: a month item when its month leaves the window, TOTAL with the current month", async () => {
    expect(await attr('SHOP_R#visitor#V1', 'M2023-12')).toBe(String(day(2024, 2, 1)));
    expect(await attr('SHOP_R#visitor#V1', 'M2024-01')).toBe(String(day(2024, 3, 1)));
    expect(await attr('SHOP_R#visitor#V1', 'M2024-03')).toBe(String(day(2024, 5, 1)));
    expect(await attr('SHOP_R#visitor#V1', 'TOTAL')).toBe(String(day(2024, 5, 1)));
    expect(await attr('SHOP_R#product#P1', 'M2024-01')).toBeUndefined();
    expect(await attr('SHOP_R', 'TOTAL')).toBeUndefined();
  });

  it('segment rules never count expired months, though DynamoDB still holds them', async () => {
    const rules = (range: string) => ({
      visitor: 'V1',
      segments: [{ name: 's', rules: [{ metric: 'ViewCount', range, op: '>=', value: 1 }] }],
    });
    const evaluate = async (range: string) =>
      (await app.inject({ method: 'POST', url: '/v1/segments/evaluate', headers: bearer(key), payload: rules(range) })).json().segments[0]
        .rules[0].actual;
    expect(await evaluate('allTime')).toBe(2); // not TOTAL's 4
    expect(await evaluate('last3m')).toBe(2); // not January's
    expect(await evaluate('thisMonth')).toBe(1);
  });

  it('visitor series and totals cut at the retention start; a range wholly before it is refused; other entities are not cut', async () => {
    const get = async (url: string) => app.inject({ method: 'GET', url, headers: bearer(key) });
    const all = (await get('/v1/series?entity=visitor:V1&range=allTime&granularity=total&metrics=ViewCount')).json();
    expect(all).toMatchObject({ from: '2024-02-01', to: '2024-03-15', totals: { ViewCount: 2 } });
    const months = (await get('/v1/series?entity=visitor:V1&from=2023-12-01&to=2024-03-15&granularity=month&metrics=ViewCount')).json();
    expect(months.points.map((p: { period: string; values: { ViewCount: number } }) => [p.period, p.values.ViewCount])).toEqual([
      ['2024-02', 1],
      ['2024-03', 1],
    ]);
    expect((await get('/v1/totals?entity=visitor&ids=V1&range=last3m&metrics=ViewCount')).json().items[0].values.ViewCount).toBe(2);
    const before = await get('/v1/series?entity=visitor:V1&from=2023-12-01&to=2024-01-31&metrics=ViewCount');
    expect({ status: before.statusCode, field: before.json().field }).toEqual({ status: 400, field: 'from' });
    expect((await get('/v1/series?entity=product:P1&range=allTime&granularity=total&metrics=ViewCount')).json().totals.ViewCount).toBe(4);
  });

  it("a visitor's year points are summed from the months kept, not TOTAL's year cell (which still holds January)", async () => {
    const get = async (url: string) => (await app.inject({ method: 'GET', url, headers: bearer(key) })).json();
    const years = (r: { points: Array<{ period: string; values: { ViewCount: number } }> }) =>
      r.points.map((p) => [p.period, p.values.ViewCount]);
    expect(years(await get('/v1/series?entity=visitor:V1&range=allTime&granularity=year&metrics=ViewCount'))).toEqual([['2024', 2]]);
    const dated = await get('/v1/series?entity=visitor:V1&from=2023-12-01&to=2024-03-15&granularity=year&metrics=ViewCount');
    expect({ points: years(dated), totals: dated.totals }).toEqual({ points: [['2024', 2]], totals: { ViewCount: 2 } });
    // Without a history limit a year point is the TOTAL item's year cell, whole.
    expect(years(await get('/v1/series?entity=product:P1&range=allTime&granularity=year&metrics=ViewCount'))).toEqual([
      ['2023', 1],
      ['2024', 3],
    ]);
  });
});
