import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { bearer, order, orderItem, useFixture, times, view } from '../test/fixture';
import { useSeededStore } from './test-fixtures';

const NOW = Date.parse('2024-03-15T12:00:00Z');

const f = useFixture();
const registry = new Registry();
const shop = useSeededStore(f, 'SHOP_S', {
  now: NOW,
  deps: { registry },
  seed: async () => {
    await f.apply('SHOP_S', 'UTC', [
      ...times(3, () => view('2024-03-15T10:00:00Z', 'P1', 'V1')),
      ...times(4, () => view('2024-02-20T10:00:00Z', 'P2', 'V1')),
      order('2024-03-15T09:00:00Z', '19.99', 'V1'),
      orderItem('2024-03-15T09:00:00Z', 'P1', '19.99', 'V1'),
      view('2024-03-15T10:00:00Z', 'P1', 'V2'),
    ]);
    await f.flush('SHOP_S');
    await f.apply('SHOP_S', 'UTC', [
      ...times(3, () => view('2024-03-15T11:00:00Z', 'P2', 'V1')),
      order('2024-03-15T11:30:00Z', '0.02', 'V1'),
    ]);
  },
});

const segments = [
  {
    name: 'p1-fan',
    match: 'all',
    rules: [
      { metric: 'ProductViews', key: 'P1', range: 'last3m', op: '>=', value: 3 },
      { metric: 'ProductViews', key: 'P2', range: 'allTime', op: '>=', value: 5 },
    ],
  },
  {
    name: 'big-spender',
    match: 'all',
    rules: [
      { metric: 'Revenue', range: 'last7d', op: '>', value: 20 },
      { metric: 'OrderCount', range: 'last30d', op: '>=', value: 5 },
    ],
  },
  {
    name: 'active-today',
    match: 'any',
    rules: [
      { metric: 'OrderCount', range: 'last30d', op: '>=', value: 5 },
      { metric: 'ViewCount', range: 'today', op: '=', value: 6 },
    ],
  },
];

const evaluate = async (visitor: string, segs: unknown = segments) => {
  const res = await shop.app.inject({
    method: 'POST',
    url: '/v1/segments/evaluate',
    headers: bearer(shop.key),
    payload: { visitor, segments: segs },
  });
  expect(res.statusCode).toBe(200);
  return res.json();
};

describe('POST /v1/segments/evaluate', () => {
  it("evaluates rules on the visitor's DynamoDB history plus exactly the counts still in Redis", async () => {
    const body = await evaluate('V1');
    expect(body).toEqual({
      visitor: 'V1',
      segments: [
        {
          name: 'p1-fan',
          matched: true,
          rules: [
            { metric: 'ProductViews', key: 'P1', range: 'last3m', op: '>=', value: 3, actual: 3, matched: true },
            // 4 in DynamoDB + 3 in Redis.
            { metric: 'ProductViews', key: 'P2', range: 'allTime', op: '>=', value: 5, actual: 7, matched: true },
          ],
        },
        {
          name: 'big-spender',
          matched: false,
          rules: [
            { metric: 'Revenue', range: 'last7d', op: '>', value: 20, actual: '20.01', matched: true },
            { metric: 'OrderCount', range: 'last30d', op: '>=', value: 5, actual: 2, matched: false },
          ],
        },
        {
          name: 'active-today',
          matched: true,
          rules: [
            { metric: 'OrderCount', range: 'last30d', op: '>=', value: 5, actual: 2, matched: false },
            { metric: 'ViewCount', range: 'today', op: '=', value: 6, actual: 6, matched: true },
          ],
        },
      ],
      cache: 'miss',
      asOf: '2024-03-15T12:00:00.000Z',
      dynamoRequests: 1,
    });
  });

  it('serves the session from the cache, still exact as counts arrive and rows are written', async () => {
    const p1 = (b: { segments: Array<{ rules: Array<{ actual: unknown }> }> }) => b.segments[0]!.rules[0]!.actual;
    const hit = await evaluate('V1');
    expect(hit).toMatchObject({ cache: 'hit', dynamoRequests: 0 });
    expect(p1(hit)).toBe(3);

    await f.apply(
      'SHOP_S',
      'UTC',
      times(2, () => view('2024-03-15T11:45:00Z', 'P1', 'V1')),
    );
    const live = await evaluate('V1');
    expect(live).toMatchObject({ cache: 'hit', dynamoRequests: 0 });
    expect(p1(live)).toBe(5);

    // The writer applies the rows to DynamoDB and drops the visitor's cache in the same step.
    await f.flush('SHOP_S');
    const reread = await evaluate('V1');
    expect(reread).toMatchObject({ cache: 'miss', dynamoRequests: 1 });
    expect(p1(reread)).toBe(5);
    expect(reread.segments[0].rules[1].actual).toBe(7);
    expect(reread.segments[1].rules[0].actual).toBe('20.01');
    const again = await evaluate('V1');
    expect(again).toMatchObject({ cache: 'hit', dynamoRequests: 0 });
    expect(again.segments).toEqual(reread.segments);

    const text = await registry.metrics();
    expect(text).toContain('tally_segment_cache_total{result="hit"} 3');
    expect(text).toContain('tally_segment_cache_total{result="miss"} 2');
  });

  it('answers zeros for a visitor without counts', async () => {
    const body = await evaluate('V404', [{ name: 'new', rules: [{ metric: 'ViewCount', range: 'allTime', op: '=', value: 0 }] }]);
    expect(body).toMatchObject({
      visitor: 'V404',
      segments: [
        { name: 'new', matched: true, rules: [{ metric: 'ViewCount', range: 'allTime', op: '=', value: 0, actual: 0, matched: true }] },
      ],
      cache: 'miss',
    });
  });

  it("refuses a key written into metric: 400 naming the rule's metric, the key goes in key", async () => {
    const refusal = async (metric: string) => {
      const rules = [
        { metric: 'ViewCount', range: 'today', op: '>=', value: 1 },
        { metric, range: 'today', op: '>=', value: 1 },
      ];
      const res = await shop.app.inject({
        method: 'POST',
        url: '/v1/segments/evaluate',
        headers: bearer(shop.key),
        payload: { visitor: 'V1', segments: [{ name: 'fan', rules }] },
      });
      expect(res.statusCode).toBe(400);
      return res.json();
    };
    const detail = `segments.0.rules.1.metric: takes the metric's name alone ("ProductViews"); a keyed metric's key goes in key`;
    expect(await refusal('ProductViews#P1')).toMatchObject({ code: 'TALLY_ERR_BAD_REQUEST', field: 'segments.0.rules.1.metric', detail });
    expect(await refusal('ProductViews#')).toMatchObject({ field: 'segments.0.rules.1.metric', detail });
    expect(await refusal('View Count')).toMatchObject({
      field: 'segments.0.rules.1.metric',
      detail: 'segments.0.rules.1.metric: must be a metric name: a letter, then up to 63 of A-Z a-z 0-9 _',
    });
  });

  it("reads only the key's store: another store's visitor V1 is a different row", async () => {
    const otherKey = (await f.tenant('SHOP_T')).read;
    const res = await shop.app.inject({
      method: 'POST',
      url: '/v1/segments/evaluate',
      headers: bearer(otherKey),
      payload: { visitor: 'V1', segments: [{ name: 'any', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>', value: 0 }] }] },
    });
    expect(res.json().segments[0]).toMatchObject({ matched: false, rules: [{ actual: 0 }] });
  });
});

describe('rule thresholds compare exactly', () => {
  it('compares a value past 2^53 minor units with the threshold exactly, in Redis and once written to DynamoDB', async () => {
    const bigKey = (await f.tenant('SHOP_BIG')).read;
    // 90 orders of the largest value and one more: 9,007,199,254,740,993 cents (2^53 + 1), 90071992547409.93.
    await f.apply('SHOP_BIG', 'UTC', [
      ...times(90, () => order('2024-03-15T09:00:00Z', '1000000000000', 'VB')),
      order('2024-03-15T09:30:00Z', '71992547409.93', 'VB'),
    ]);
    const rule = (op: string, value: number) => ({ metric: 'Revenue', range: 'allTime', op, value });
    // A threshold is a JSON number, compared as the decimal it prints as: 90071992547409.92 (the double
    // 90071992547409.921875, which the value in cents as a double, divided by 100, rounds to as well) and
    // 90071992547409.94 (90071992547409.93 reads as the same double, so it cannot be a threshold).
    const rules = [
      rule('>', 90071992547409.92),
      rule('=', 90071992547409.92),
      rule('<=', 90071992547409.92),
      rule('!=', 90071992547409.92),
      rule('>=', 90071992547409.92),
      rule('<', 90071992547409.94),
      rule('>', 90071992547409.94),
      rule('=', 90071992547409.94),
      rule('>', 20.005),
      rule('>', -1),
    ];
    const matched = async () => {
      const res = await shop.app.inject({
        method: 'POST',
        url: '/v1/segments/evaluate',
        headers: bearer(bigKey),
        payload: { visitor: 'VB', segments: [{ name: 'whale', match: 'any', rules }] },
      });
      expect(res.statusCode).toBe(200);
      const [seg] = res.json().segments;
      expect(new Set(seg.rules.map((r: { actual: unknown }) => r.actual))).toEqual(new Set(['90071992547409.93']));
      return seg.rules.map((r: { matched: boolean }) => r.matched);
    };
    const expected = [true, false, false, true, true, true, false, false, true, true];
    expect(await matched()).toEqual(expected);
    await f.flush('SHOP_BIG');
    expect(await matched()).toEqual(expected);
  });
});
