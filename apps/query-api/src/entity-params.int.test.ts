import { validateEvents } from '@tally/schema';
import { beforeAll, describe, expect, it } from 'vitest';
import { badRequest, bearer, order, useFixture, times, view } from '../test/fixture';
import type { QueryApiApp } from './app';

const NOW = Date.parse('2024-03-15T12:00:00Z');

const f = useFixture();
let app: QueryApiApp;
let key: string;

const enc = (path: string) => Buffer.from(path).toString('base64url');

beforeAll(async () => {
  key = (await f.tenant('SHOP_E')).read;
  const pages = [
    ...times(2, () => ({ type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { visitor: 'V1', page: '/shop/a,b' } })),
    { type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { visitor: 'V1', page: '/shop/a' } },
    ...times(4, () => ({ type: 'page_view', ts: '2024-03-15T10:00:00Z', dims: { page: '/b' } })),
  ];
  const v = validateEvents(f.rules, pages, { now: NOW, clockSkewMs: 60_000, latenessMs: 86_400_000 });
  expect(v.errors).toEqual([]);
  await f.apply('SHOP_E', 'UTC', [...v.events, view('2024-03-15T10:00:00Z', 'P1', 'V1'), order('2024-03-15T10:00:00Z', '5', 'V1')]);
  app = await f.app({ now: () => NOW });
});

const get = async (url: string) => {
  const res = await app.inject({ method: 'GET', url, headers: bearer(key) });
  return { status: res.statusCode, body: res.json() };
};
const evaluate = async (rules: unknown[]) => {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/segments/evaluate',
    headers: { ...bearer(key), 'content-type': 'application/json' },
    payload: JSON.stringify({ visitor: 'V1', segments: [{ name: 's', rules }] }),
  });
  return { status: res.statusCode, body: res.json() };
};

const VISITOR_COUNTS = 'ViewCount, ProductViews#<product>, PageViewCount, OrderCount, Revenue, ProductOrders#<product>';

describe('a metric the entity does not count: 400 naming the field and what the entity counts', () => {
  const cases: Array<[string, string, string]> = [
    [
      '/v1/series?entity=visitor:V1&metrics=ViewCount,UniqueVisitors',
      'metrics',
      `entity visitor does not count UniqueVisitors; it counts ${VISITOR_COUNTS}`,
    ],
    [
      '/v1/series?entity=store&metrics=ProductViews%23P1',
      'metrics',
      'entity store does not count ProductViews#<product>; it counts ViewCount, PageViewCount, OrderCount, Revenue, UniqueVisitors',
    ],
    ['/v1/series?entity=page:/shop/a&metrics=PageViewCount', 'metrics', 'entity page does not count PageViewCount; it counts PageViews'],
    [
      '/v1/totals?entity=store&metrics=ProductViews%23P1',
      'metrics',
      'entity store does not count ProductViews#<product>; it counts ViewCount, PageViewCount, OrderCount, Revenue, UniqueVisitors',
    ],
    [
      '/v1/totals?entity=product&ids=P1&metrics=ViewCount,PageViews',
      'metrics',
      'entity product does not count PageViews; it counts ViewCount, OrderCount, Revenue, UniqueVisitors',
    ],
    [
      '/v1/top?entity=product&metric=PageViews',
      'metric',
      'entity product does not count PageViews; it counts ViewCount, OrderCount, Revenue, UniqueVisitors',
    ],
    ['/v1/top?entity=page&metric=ViewCount', 'metric', 'entity page does not count ViewCount; it counts PageViews'],
  ];
  it.each(cases)('GET %s → 400 field %s', async (url, field, detail) => {
    const { status, body } = await get(url);
    expect(status).toBe(400);
    expect(body).toEqual(badRequest(field, detail));
  });

  it('keeps the earlier errors first: unknown metric, missing key, unranked entity', async () => {
    expect((await get('/v1/series?entity=page:/b&metrics=Nope')).body.detail).toMatch(/^unknown metric "Nope"/);
    expect((await get('/v1/series?entity=page:/b&metrics=ProductViews')).body.detail).toMatch(/^metric ProductViews is keyed by product/);
    expect((await get('/v1/top?entity=visitor&metric=PageViews')).body).toEqual(
      badRequest('entity', expect.stringMatching(/^entity visitor keeps no rankings/)),
    );
  });

  it('refuses a segment rule on a metric visitors do not count instead of matching every visitor', async () => {
    const counted = { metric: 'ViewCount', range: 'allTime', op: '>=', value: 1 };
    for (const metric of ['UniqueVisitors', 'PageViews']) {
      const { status, body } = await evaluate([counted, { metric, range: 'allTime', op: '<', value: 1 }]);
      expect(status).toBe(400);
      expect(body).toEqual(badRequest('segments.0.rules.1.metric', `entity visitor does not count ${metric}; it counts ${VISITOR_COUNTS}`));
    }
    const ok = await evaluate([counted, { metric: 'ProductViews', key: 'P1', range: 'allTime', op: '=', value: 1 }]);
    expect(ok.status).toBe(200);
    expect(ok.body.segments[0].matched).toBe(true);
  });

  it('answers the metrics the entity counts', async () => {
    const series = await get('/v1/series?entity=visitor:V1&metrics=ProductViews%23P1,PageViewCount,Revenue&range=today');
    expect(series.status).toBe(200);
    expect(series.body.totals).toEqual({ 'ProductViews#P1': 1, PageViewCount: 3, Revenue: '5' });
    const store = await get('/v1/totals?entity=store&metrics=PageViewCount,UniqueVisitors&range=today');
    expect(store.body.items).toEqual([{ id: 'SHOP_E', values: { PageViewCount: 7, UniqueVisitors: 1 } }]);
    const top = await get('/v1/top?entity=page&metric=PageViews&range=today');
    expect(top.body.items.map((x: { path: string }) => x.path)).toEqual(['/b', '/shop/a,b', '/shop/a']);
  });
});

describe('GET /v1/totals of pages: one path per ids parameter, commas and all', () => {
  const totals = async (ids: string[]) => {
    const qs = ids.map((id) => `ids=${encodeURIComponent(id)}`).join('&');
    const { status, body } = await get(`/v1/totals?entity=page&${qs}&metrics=PageViews&range=today`);
    expect(status).toBe(200);
    return body.items;
  };

  it('reads a path holding a comma as the one page', async () => {
    expect(await totals(['/shop/a,b'])).toEqual([{ id: enc('/shop/a,b'), values: { PageViews: 2 } }]);
  });

  it('takes repeated ids parameters as one page each, in order, duplicates once', async () => {
    expect(await totals(['/shop/a,b', '/shop/a', '/b', '/shop/a,b'])).toEqual([
      { id: enc('/shop/a,b'), values: { PageViews: 2 } },
      { id: enc('/shop/a'), values: { PageViews: 1 } },
      { id: enc('/b'), values: { PageViews: 4 } },
    ]);
  });

  it('still splits a list of page keys, and ids of other entities, on commas', async () => {
    expect(await totals([`${enc('/shop/a')},${enc('/b')}`])).toEqual([
      { id: enc('/shop/a'), values: { PageViews: 1 } },
      { id: enc('/b'), values: { PageViews: 4 } },
    ]);
    const products = await get('/v1/totals?entity=product&ids=P1,P2&ids=P3&metrics=ViewCount&range=today');
    expect(products.body.items.map((x: { id: string }) => x.id)).toEqual(['P1', 'P2', 'P3']);
  });
});
