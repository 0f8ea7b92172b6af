import { validateEvents } from '@tally/schema';
import { setCurrency } from '@tally/tenants';
import { describe, expect, it } from 'vitest';
import { bearer, order, orderItem, useFixture, times, view } from '../test/fixture';
import { useSeededStore } from './test-fixtures';

// The query clock: Friday 2024-03-15 12:00 UTC (a leap year). last30d = 2024-02-15 … 2024-03-15.
const NOW = Date.parse('2024-03-15T12:00:00Z');

const f = useFixture();
let keyB: string;
const shopA = useSeededStore(f, 'SHOP_A', {
  now: NOW,
  seed: async () => {
    keyB = (await f.tenant('SHOP_B', 'America/New_York')).read;
    await setCurrency(f.db, 'SHOP_B', 'USD');

    // Store A, written to DynamoDB.
    await f.apply('SHOP_A', 'UTC', [
      ...times(3, () => view('2024-03-15T10:00:00Z', 'P1', 'V1')),
      ...times(2, () => view('2024-03-10T08:00:00Z', 'P1', 'V2')),
      ...times(4, () => view('2024-02-20T23:59:59Z', 'P2', 'V1')),
      view('2023-12-01T00:00:00Z', 'P3', 'V3'),
      order('2024-03-15T09:00:00Z', '19.99', 'V1'),
      order('2024-03-14T09:00:00Z', '5.01', 'V2'),
      orderItem('2024-03-15T09:00:00Z', 'P1', '19.99', 'V1'),
    ]);
    await f.flush('SHOP_A');
    // Store A, still only in Redis (the open bucket): merged into every answer.
    await f.apply('SHOP_A', 'UTC', [
      ...times(3, () => view('2024-03-15T11:00:00Z', 'P2', 'V1')),
      order('2024-03-15T11:30:00Z', '0.02', 'V1'),
    ]);

    // Store B has the same product ids with other counts: store A must never see them.
    await f.apply('SHOP_B', 'America/New_York', [
      ...times(100, () => view('2024-03-15T15:00:00Z', 'P1', 'V1')),
      order('2024-03-15T15:00:00Z', '1000', 'V1'),
    ]);
    await f.flush('SHOP_B');
    await f.apply('SHOP_B', 'America/New_York', [view('2024-03-15T15:00:00Z', 'P2', 'V1')]);
  },
});
const { get } = shopA;

describe('GET /v1/store', () => {
  it("describes the key's store, its time zone, today, the metrics and entities", async () => {
    const { status, body } = await get('/v1/store');
    expect(status).toBe(200);
    expect(body).toEqual({
      store: 'SHOP_A',
      timeZone: 'UTC',
      now: '2024-03-15T12:00:00.000Z',
      today: '2024-03-15',
      currency: null,
      metrics: [
        { name: 'ViewCount', scale: 0, description: 'product views', keyedBy: null, countedOn: ['store', 'product', 'visitor'] },
        { name: 'PageViewCount', scale: 0, description: 'page views', keyedBy: null, countedOn: ['store', 'visitor'] },
        { name: 'OrderCount', scale: 0, description: 'orders', keyedBy: null, countedOn: ['store', 'product', 'visitor'] },
        {
          name: 'Revenue',
          scale: 2,
          description: 'order revenue in currency units (kept exactly in minor units)',
          keyedBy: null,
          countedOn: ['store', 'product', 'visitor'],
        },
        {
          name: 'ProductViews',
          scale: 0,
          description: 'views of one product by one visitor, keyed by product',
          keyedBy: 'product',
          countedOn: ['visitor'],
        },
        {
          name: 'ProductOrders',
          scale: 0,
          description: 'order lines of one product by one visitor, keyed by product',
          keyedBy: 'product',
          countedOn: ['visitor'],
        },
        {
          name: 'PageViews',
          scale: 0,
          description: "views of one page, on the page's row (top pages)",
          keyedBy: null,
          countedOn: ['page'],
        },
        {
          name: 'UniqueVisitors',
          scale: 0,
          description: 'distinct visitors (exact up to 300, HyperLogLog above: standard error 0.81%)',
          keyedBy: null,
          countedOn: ['store', 'product'],
          distinctOn: ['store', 'product'],
        },
      ],
      entities: ['store', 'product', 'visitor', 'page'],
    });
  });

  it("gives today in the store's own time zone", async () => {
    const late = await f.app({ now: () => Date.parse('2024-03-16T02:00:00Z') });
    const res = await late.inject({ method: 'GET', url: '/v1/store', headers: bearer(keyB) });
    expect(res.json()).toMatchObject({ store: 'SHOP_B', timeZone: 'America/New_York', today: '2024-03-15', currency: 'USD' });
  });
});

describe('UniqueVisitors', () => {
  it('answers distinct visitors per day, per range and all time, from DynamoDB and the open bucket together', async () => {
    const s = await get('/v1/series?metrics=UniqueVisitors,ViewCount&from=2024-03-13&to=2024-03-15');
    expect(s.status).toBe(200);
    // V2 ordered on the 14th; V1 ordered and viewed on the 15th (partly in DynamoDB, partly in the open bucket).
    expect(s.body.points.map((p: { values: Record<string, number> }) => p.values['UniqueVisitors'])).toEqual([0, 1, 1]);
    expect(s.body.totals).toEqual({ UniqueVisitors: 2, ViewCount: 6 });
    expect(s.body.estimated).toEqual([]); // a handful of visitors a day: exact sets, not HyperLogLogs
    const all = await get('/v1/series?metrics=UniqueVisitors&range=allTime&granularity=total');
    expect(all.body.totals).toEqual({ UniqueVisitors: 3 });
    // allTime alone takes its one granularity.
    const allAlone = await get('/v1/series?metrics=UniqueVisitors&range=allTime');
    expect(allAlone.status).toBe(200);
    expect(allAlone.body).toMatchObject({ granularity: 'total', range: 'allTime', totals: { UniqueVisitors: 3 } });
    const months = await get('/v1/series?metrics=UniqueVisitors&from=2024-02-01&to=2024-03-31&granularity=month');
    expect(months.body.points).toEqual([
      { period: '2024-02', values: { UniqueVisitors: 1 } },
      { period: '2024-03', values: { UniqueVisitors: 2 } },
    ]);
    const products = await get('/v1/totals?entity=product&ids=P1,P2,P3&metrics=UniqueVisitors&range=allTime');
    expect(products.body.items).toEqual([
      { id: 'P1', values: { UniqueVisitors: 2 } },
      { id: 'P2', values: { UniqueVisitors: 1 } },
      { id: 'P3', values: { UniqueVisitors: 1 } },
    ]);
    const refused = await get('/v1/totals?entity=visitor&ids=V1&metrics=UniqueVisitors');
    expect(refused.status).toBe(400);
    expect(refused.body.field).toBe('metrics');
  });
});

describe('GET /v1/series', () => {
  it('answers a daily series of last30d with one DynamoDB request, live Redis counts merged, Revenue exact', async () => {
    const { status, body } = await get('/v1/series?entity=store&metrics=ViewCount,OrderCount,Revenue&range=last30d&granularity=day');
    expect(status).toBe(200);
    expect(body).toMatchObject({
      store: 'SHOP_A',
      timeZone: 'UTC',
      entity: 'store',
      granularity: 'day',
      range: 'last30d',
      from: '2024-02-15',
      to: '2024-03-15',
      metrics: ['ViewCount', 'OrderCount', 'Revenue'],
      totals: { ViewCount: 12, OrderCount: 3, Revenue: '25.02' },
      asOf: '2024-03-15T12:00:00.000Z',
      dynamoRequests: 1,
    });
    expect(body.points).toHaveLength(30);
    expect(body.points[0]).toEqual({ period: '2024-02-15', values: { ViewCount: 0, OrderCount: 0, Revenue: '0' } });
    const nonZero = body.points.filter(
      (p: { values: { ViewCount: number; OrderCount: number } }) => p.values.ViewCount || p.values.OrderCount,
    );
    expect(nonZero).toEqual([
      { period: '2024-02-20', values: { ViewCount: 4, OrderCount: 0, Revenue: '0' } },
      { period: '2024-03-10', values: { ViewCount: 2, OrderCount: 0, Revenue: '0' } },
      { period: '2024-03-14', values: { ViewCount: 0, OrderCount: 1, Revenue: '5.01' } },
      // 3 views in DynamoDB + 3 in Redis; 19.99 in DynamoDB + 0.02 in Redis.
      { period: '2024-03-15', values: { ViewCount: 6, OrderCount: 2, Revenue: '20.01' } },
    ]);
  });

  it('reads all time from the TOTAL item with one request (granularity total)', async () => {
    for (const url of [
      '/v1/series?metrics=ViewCount,OrderCount,Revenue&granularity=total',
      '/v1/series?metrics=ViewCount,OrderCount,Revenue&granularity=total&range=allTime',
    ]) {
      const { status, body } = await get(url);
      expect(status).toBe(200);
      expect(body).toMatchObject({
        range: 'allTime',
        from: null,
        to: null,
        points: [{ period: 'total', values: { ViewCount: 13, OrderCount: 3, Revenue: '25.02' } }],
        totals: { ViewCount: 13, OrderCount: 3, Revenue: '25.02' },
        dynamoRequests: 1,
      });
    }
  });

  it('sums a bounded range into one point for granularity total', async () => {
    const { body } = await get('/v1/series?metrics=ViewCount&granularity=total&range=last7d');
    expect(body).toMatchObject({
      from: '2024-03-09',
      to: '2024-03-15',
      points: [{ period: 'total', values: { ViewCount: 8 } }],
      dynamoRequests: 1,
    });
  });

  it('answers whole calendar months and years overlapping the range', async () => {
    const months = await get('/v1/series?metrics=ViewCount&range=last3m&granularity=month');
    expect(months.body).toMatchObject({
      from: '2023-12-16',
      to: '2024-03-15',
      points: [
        { period: '2023-12', values: { ViewCount: 1 } },
        { period: '2024-01', values: { ViewCount: 0 } },
        { period: '2024-02', values: { ViewCount: 4 } },
        { period: '2024-03', values: { ViewCount: 8 } },
      ],
      dynamoRequests: 1,
    });
    const years = await get('/v1/series?metrics=ViewCount,Revenue&range=last12m&granularity=year');
    expect(years.body).toMatchObject({
      points: [
        { period: '2023', values: { ViewCount: 1, Revenue: '0' } },
        { period: '2024', values: { ViewCount: 12, Revenue: '25.02' } },
      ],
      totals: { ViewCount: 13, Revenue: '25.02' },
      dynamoRequests: 1,
    });
  });

  it('answers all time by year: a point per year from the first with counts to the last, years between at zero', async () => {
    const all = await get('/v1/series?metrics=ViewCount,Revenue,UniqueVisitors&range=allTime&granularity=year');
    expect(all.status).toBe(200);
    expect(all.body).toMatchObject({
      from: null,
      to: null,
      granularity: 'year',
      points: [
        { period: '2023', values: { ViewCount: 1, Revenue: '0', UniqueVisitors: 1 } },
        { period: '2024', values: { ViewCount: 12, Revenue: '25.02', UniqueVisitors: 2 } },
      ],
      totals: { ViewCount: 13, Revenue: '25.02', UniqueVisitors: 3 },
      dynamoRequests: 1,
    });
    // The same totals as all time in one point.
    expect((await get('/v1/series?metrics=ViewCount,Revenue,UniqueVisitors&range=allTime')).body.totals).toEqual(all.body.totals);
    // A row with no counts has no years.
    expect((await get('/v1/series?entity=product:NONE&metrics=ViewCount&range=allTime&granularity=year')).body).toMatchObject({
      points: [],
      totals: { ViewCount: 0 },
    });
    // Years with no counts between two that have some are points at zero; the newest year is only in Redis.
    const key = (await f.tenant('SHOP_YEARS')).read;
    await f.apply('SHOP_YEARS', 'UTC', [view('2021-06-01T00:00:00Z', 'P1', 'V1'), view('2023-06-01T00:00:00Z', 'P1', 'V1')]);
    await f.flush('SHOP_YEARS');
    await f.apply('SHOP_YEARS', 'UTC', [view('2024-03-01T00:00:00Z', 'P1', 'V1')]);
    const gaps = await get('/v1/series?entity=product:P1&metrics=ViewCount&range=allTime&granularity=year', key);
    expect(gaps.body.points).toEqual(
      ['2021', '2022', '2023', '2024'].map((period) => ({ period, values: { ViewCount: period === '2022' ? 0 : 1 } })),
    );
    expect(gaps.body.totals).toEqual({ ViewCount: 3 });
  });

  it('reads a product and a visitor, with keyed metrics, over explicit dates', async () => {
    const p1 = await get('/v1/series?entity=product:P1&metrics=ViewCount,OrderCount,Revenue&from=2024-03-10&to=2024-03-15');
    expect(p1.body).toMatchObject({
      entity: 'product:P1',
      range: null,
      from: '2024-03-10',
      to: '2024-03-15',
      totals: { ViewCount: 5, OrderCount: 1, Revenue: '19.99' },
    });
    expect(p1.body.points.map((p: { period: string }) => p.period)).toEqual([
      '2024-03-10',
      '2024-03-11',
      '2024-03-12',
      '2024-03-13',
      '2024-03-14',
      '2024-03-15',
    ]);
    const v1 = await get(
      '/v1/series?entity=visitor:V1&metrics=ViewCount,ProductViews%23P1,ProductViews%23P2,Revenue&range=last30d&granularity=total',
    );
    expect(v1.body.totals).toEqual({ ViewCount: 10, 'ProductViews#P1': 3, 'ProductViews#P2': 7, Revenue: '20.01' });
  });

  it("defaults to the store, last30d, by day, the entity's unkeyed metrics", async () => {
    const { body } = await get('/v1/series');
    expect(body).toMatchObject({
      entity: 'store',
      granularity: 'day',
      range: 'last30d',
      metrics: ['ViewCount', 'PageViewCount', 'OrderCount', 'Revenue'],
    });
    expect(body.totals).toEqual({ ViewCount: 12, PageViewCount: 0, OrderCount: 3, Revenue: '25.02' });
  });

  it('accepts store:<own store> and a store parameter naming its own store', async () => {
    const { status, body } = await get('/v1/series?entity=store:SHOP_A&store=SHOP_A&metrics=ViewCount&range=today');
    expect(status).toBe(200);
    expect(body.totals).toEqual({ ViewCount: 6 });
  });
});

describe('GET /v1/totals', () => {
  it('totals many products over last30d in one batched read, Redis counts merged, ids in the order asked', async () => {
    const { status, body } = await get('/v1/totals?entity=product&ids=P3,P1,P2,P1&metrics=ViewCount,OrderCount,Revenue&range=last30d');
    expect(status).toBe(200);
    expect(body).toMatchObject({
      store: 'SHOP_A',
      entity: 'product',
      range: 'last30d',
      from: '2024-02-15',
      to: '2024-03-15',
      items: [
        { id: 'P3', values: { ViewCount: 0, OrderCount: 0, Revenue: '0' } },
        { id: 'P1', values: { ViewCount: 5, OrderCount: 1, Revenue: '19.99' } },
        { id: 'P2', values: { ViewCount: 7, OrderCount: 0, Revenue: '0' } },
      ],
      dynamoRequests: 1,
    });
  });

  it('totals all time from the TOTAL items', async () => {
    const { body } = await get('/v1/totals?entity=product&ids=P1,P2,P3&metrics=ViewCount&range=allTime');
    expect(body).toMatchObject({
      range: 'allTime',
      from: null,
      to: null,
      items: [
        { id: 'P1', values: { ViewCount: 5 } },
        { id: 'P2', values: { ViewCount: 7 } },
        { id: 'P3', values: { ViewCount: 1 } },
      ],
      dynamoRequests: 1,
    });
  });

  it('totals the store row for entity=store', async () => {
    const { body } = await get('/v1/totals?entity=store&metrics=OrderCount,Revenue&from=2024-03-14&to=2024-03-15');
    expect(body.items).toEqual([{ id: 'SHOP_A', values: { OrderCount: 3, Revenue: '25.02' } }]);
  });
});

describe('GET /v1/top', () => {
  it('orders candidates from every bucket by exact value, so counts not yet folded into the rankings still count', async () => {
    // Rankings (folded buckets): P1 5, P2 4; the open bucket adds 3 to P2. Exact: P2 7, P1 5.
    const two = await get('/v1/top?entity=product&metric=ViewCount&range=last30d&limit=10');
    expect(two.status).toBe(200);
    expect(two.body).toMatchObject({
      entity: 'product',
      metric: 'ViewCount',
      from: '2024-02-15',
      to: '2024-03-15',
      items: [
        { id: 'P2', value: 7 },
        { id: 'P1', value: 5 },
      ],
    });
    const one = await get('/v1/top?entity=product&metric=ViewCount&range=last30d&limit=1');
    expect(one.body.items).toEqual([{ id: 'P2', value: 7 }]);
  });

  it('ranks by a scaled metric as exact decimal strings, and only the days asked', async () => {
    const revenue = await get('/v1/top?entity=product&metric=Revenue&range=today');
    expect(revenue.body.items).toEqual([{ id: 'P1', value: '19.99' }]);
    // February: P2's four views, not its three of today, nor P1's of March.
    const february = await get('/v1/top?entity=product&metric=ViewCount&from=2024-02-01&to=2024-02-29');
    expect(february.body.items).toEqual([{ id: 'P2', value: 4 }]);
    // P3's view of 2023-12-01 is older than the rankings kept (98 days back, to 2023-12-08): 400, not a list.
    const early = await get('/v1/top?entity=product&metric=ViewCount&from=2023-11-20&to=2023-12-31');
    expect(early).toMatchObject({ status: 400, body: { field: 'from' } });
    const none = await get('/v1/top?entity=product&metric=ViewCount&range=yesterday');
    expect(none.body).toMatchObject({ items: [], dynamoRequests: 0 });
  });
});

describe('top pages', () => {
  it('ranks pages by views with their paths decoded, live from the open bucket, and reads a page by its path', async () => {
    const key = (await f.tenant('SHOP_C')).read;
    const raw = [
      ...times(3, () => ({ type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { visitor: 'V1', page: '/shop/shoes' } })),
      ...times(2, () => ({ type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { page: '/' } })),
      { type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { page: '/blog/ünïcode' } },
      { type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: {} },
    ];
    const v = validateEvents(f.rules, raw, { now: NOW, clockSkewMs: 60_000, latenessMs: 86_400_000 });
    expect(v.errors).toEqual([]);
    await f.apply('SHOP_C', 'UTC', v.events);
    const enc = (p: string) => Buffer.from(p).toString('base64url');
    const top = await get('/v1/top?entity=page&metric=PageViews&range=today', key);
    expect(top.status).toBe(200);
    expect(top.body.items).toEqual([
      { id: enc('/shop/shoes'), path: '/shop/shoes', value: 3 },
      { id: enc('/'), path: '/', value: 2 },
      { id: enc('/blog/ünïcode'), path: '/blog/ünïcode', value: 1 },
    ]);
    const store = await get('/v1/series?metrics=PageViewCount&granularity=total&range=today', key);
    expect(store.body.totals).toEqual({ PageViewCount: 7 });
    // A page is read by its path or by its key.
    for (const entity of ['page:/shop/shoes', `page:${enc('/shop/shoes')}`]) {
      const one = await get(`/v1/series?entity=${encodeURIComponent(entity)}&metrics=PageViews&granularity=total&range=today`, key);
      expect(one.body.totals).toEqual({ PageViews: 3 });
    }
    // One path per ids parameter: a path may hold commas.
    const totals = await get(`/v1/totals?entity=page&ids=/&ids=${encodeURIComponent('/shop/shoes')}&metrics=PageViews&range=today`, key);
    expect(totals.body.items).toEqual([
      { id: enc('/'), values: { PageViews: 2 } },
      { id: enc('/shop/shoes'), values: { PageViews: 3 } },
    ]);
    await f.flush('SHOP_C');
    expect((await get('/v1/top?entity=page&metric=PageViews&range=today', key)).body.items).toEqual(top.body.items);
  });
});

describe('tenant isolation', () => {
  it("never shows a read key another store's counts, though both use the same ids", async () => {
    const a = await get('/v1/totals?entity=product&ids=P1,P2&metrics=ViewCount&range=allTime', shopA.key);
    const b = await get('/v1/totals?entity=product&ids=P1,P2&metrics=ViewCount&range=allTime', keyB);
    expect(a.body.items).toEqual([
      { id: 'P1', values: { ViewCount: 5 } },
      { id: 'P2', values: { ViewCount: 7 } },
    ]);
    expect(b.body.items).toEqual([
      { id: 'P1', values: { ViewCount: 100 } },
      { id: 'P2', values: { ViewCount: 1 } },
    ]);
    const storeB = await get('/v1/series?metrics=ViewCount,Revenue&granularity=total', keyB);
    expect(storeB.body).toMatchObject({ store: 'SHOP_B', totals: { ViewCount: 101, Revenue: '1000' } });
    // P2's one view of store B is in the open bucket only: ranked all the same, as the totals count it.
    const topB = await get('/v1/top?entity=product&metric=ViewCount&range=today', keyB);
    expect(topB.body.items).toEqual([
      { id: 'P1', value: 100 },
      { id: 'P2', value: 1 },
    ]);
  });

  it('answers 404 when a key names another store, whether or not it exists', async () => {
    for (const url of [
      '/v1/series?store=SHOP_B',
      '/v1/series?store=NO_SUCH_SHOP',
      '/v1/totals?entity=product&ids=P1&store=SHOP_B',
      '/v1/top?entity=product&metric=ViewCount&store=SHOP_B',
      '/v1/store?store=SHOP_B',
    ]) {
      const { status, body } = await get(url, shopA.key);
      expect({ url, status, body }).toEqual({
        url,
        status: 404,
        body: {
          type: 'about:blank',
          title: 'Not Found',
          status: 404,
          code: 'TALLY_ERR_NOT_FOUND',
          field: 'store',
          detail: expect.any(String),
        },
      });
    }
    const entity = await get('/v1/series?entity=store:SHOP_B', shopA.key);
    expect(entity).toMatchObject({ status: 404, body: { field: 'entity' } });
    const ids = await get('/v1/totals?entity=store&ids=SHOP_B', shopA.key);
    expect(ids).toMatchObject({ status: 404, body: { field: 'ids' } });
    const seg = await shopA.app.inject({
      method: 'POST',
      url: '/v1/segments/evaluate?store=SHOP_B',
      headers: bearer(shopA.key),
      payload: { visitor: 'V1', segments: [] },
    });
    expect(seg.statusCode).toBe(404);
  });
});
