import { createDynamoMeter } from '@tally/dynamo';
import { createTenantDirectory } from '@tally/tenants';
import { beforeAll, describe, expect, it } from 'vitest';
import { badRequest, bearer, useFixture, view } from '../test/fixture';
import type { QueryApiApp } from './app';

// Long ranges read the coarsest items that cover them, and what one query may read is bounded. DynamoDB requests
// are counted at the client (every command sent, by name), not taken from the answer.

const NOW = Date.parse('2026-12-02T12:00:00Z');
const IDS = Array.from({ length: 100 }, (_, i) => `P${i}`);

const f = useFixture();
let app: QueryApiApp;
let key: string;
const sent = new Map<string, number>();

beforeAll(async () => {
  key = (await f.tenant('SHOP')).read;
  // P0 around both ends of the ten-year range (the days just outside it must not count), P1 in a whole year
  // and in a whole month, P2 only in Redis.
  await f.apply('SHOP', 'UTC', [
    view('2016-12-02T23:59:59Z', 'P0'),
    view('2016-12-03T00:00:00Z', 'P0'),
    view('2016-12-31T10:00:00Z', 'P0'),
    view('2026-12-02T23:00:00Z', 'P0'),
    view('2026-12-03T00:00:00Z', 'P0'),
    view('2020-02-29T12:00:00Z', 'P1'),
    view('2026-03-31T12:00:00Z', 'P1'),
    view('2026-11-30T12:00:00Z', 'P1'),
  ]);
  await f.flush('SHOP');
  await f.apply('SHOP', 'UTC', [
    view('2019-07-01T00:00:00Z', 'P2'),
    view('2026-12-01T00:00:00Z', 'P2'),
    view('2016-12-01T00:00:00Z', 'P2'),
  ]);
  app = await f.app({ now: () => NOW, directory: cachedKeys() });
  f.client.middlewareStack.add(
    (next, context) => async (args) => {
      const name = context.commandName ?? 'unknown';
      sent.set(name, (sent.get(name) ?? 0) + 1);
      return next(args);
    },
    { step: 'initialize', name: 'countCommands' },
  );
});

// Keys cached for the test's length, so the counted requests are the query's own.
const cachedKeys = () => createTenantDirectory({ dynamo: f.client, table: f.table, cacheTtlMs: 600_000 });

const get = async (url: string, on = app) => {
  await on.inject({ method: 'GET', url: '/v1/store', headers: bearer(key) }); // the key lookup, before counting
  sent.clear();
  const res = await on.inject({ method: 'GET', url, headers: bearer(key) });
  return { status: res.statusCode, body: res.json() };
};

describe('a ten-year totals request over 100 products', () => {
  it('reads whole years from TOTAL and whole months from month items: 14 items per product, 14 BatchGetItem calls, not 121', async () => {
    const { status, body } = await get(`/v1/totals?entity=product&ids=${IDS.join(',')}&from=2016-12-03&to=2026-12-02&metrics=ViewCount`);
    expect(status).toBe(200);
    expect(sent.get('BatchGetItemCommand')).toBe(14);
    expect([...sent.keys()]).toEqual(['BatchGetItemCommand']);
    expect(body.dynamoRequests).toBe(14);
    expect(body.items.slice(0, 4)).toEqual([
      { id: 'P0', values: { ViewCount: 3 } },
      { id: 'P1', values: { ViewCount: 3 } },
      { id: 'P2', values: { ViewCount: 2 } },
      { id: 'P3', values: { ViewCount: 0 } },
    ]);
  });

  it('answers the same sums as day-by-day reading', async () => {
    const { body } = await get('/v1/series?entity=product:P0&from=2016-12-03&to=2026-12-02&granularity=day&metrics=ViewCount');
    expect(body.totals).toEqual({ ViewCount: 3 });
    const p1 = await get('/v1/series?entity=product:P1&from=2016-12-03&to=2026-12-02&granularity=total&metrics=ViewCount');
    expect(p1.body).toMatchObject({ points: [{ period: 'total', values: { ViewCount: 3 } }], dynamoRequests: 1 });
    expect(sent.get('BatchGetItemCommand')).toBe(1);
  });

  it('refuses, before reading anything, a query that would read more items than the bound, with a 400 that says so', async () => {
    // 2016-01-15..2025-12-14: 12 month items of 2016, TOTAL for 2017-2024, 12 month items of 2025 = 25 per product.
    const { status, body } = await get(`/v1/totals?entity=product&ids=${IDS.join(',')}&from=2016-01-15&to=2025-12-14`);
    expect(status).toBe(400);
    expect(body).toEqual(
      badRequest(
        'ids',
        'this query would read 2500 DynamoDB items (100 rows × 25 items for the range); at most 2000 per query: ask for fewer ids or a shorter range',
      ),
    );
    expect(sent.size).toBe(0);
  });

  it('takes the bound from the configuration (MAX_ITEMS_PER_QUERY), for series too', async () => {
    const small = await f.app({
      now: () => NOW,
      directory: cachedKeys(),
      query: {
        buckets: f.buckets,
        dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() },
        rules: f.rules,
        maxItemsPerQuery: 24,
      },
    });
    const month = await get('/v1/series?entity=product:P0&from=2024-01-01&to=2026-01-31&granularity=month', small);
    expect(month.status).toBe(400);
    expect(month.body).toMatchObject({
      field: 'range',
      detail: 'this query would read 25 DynamoDB items (25 month items); at most 24 per query: ask for fewer ids or a shorter range',
    });
    expect(sent.size).toBe(0);
    const two = await get('/v1/totals?entity=product&ids=P0,P1&from=2016-12-03&to=2026-12-02', small);
    expect(two).toMatchObject({ status: 400, body: { field: 'ids' } });
    const one = await get('/v1/totals?entity=product&ids=P0&from=2016-12-03&to=2026-12-02&metrics=ViewCount', small);
    expect(one).toMatchObject({ status: 200, body: { items: [{ id: 'P0', values: { ViewCount: 3 } }], dynamoRequests: 1 } });
  });
});
