import { BucketStore, RANK_TTL_DAYS } from '@tally/buckets';
import { createDynamoMeter } from '@tally/dynamo';
import { addDays, formatDate, localDate } from '@tally/key-layout';
import { HistoryMemo } from '@tally/query';
import { compileRules, defaultRules, rollup } from '@tally/schema';
import { updateTenant } from '@tally/tenants';
import { describe, expect, it } from 'vitest';
import { badRequest, bearer, times, useFixture, view } from '../test/fixture';
import type { QueryApiApp } from './app';
import { useSeededStore } from './test-fixtures';

// The query clock: 2024-03-16 02:00 UTC, 22:00 on 2024-03-15 in New York (the store's zone).
const NOW = Date.parse('2024-03-16T02:00:00Z');
const TZ = 'America/New_York';
const DAY_MS = 86_400_000;
/** How far back a top list reaches: a day's ranking lives RANK_TTL_DAYS days after its last count, less a day's margin. */
const BACK = RANK_TTL_DAYS - 2;
const today = localDate(NOW, TZ);
const day = (daysAgo: number) => formatDate(addDays(today, -daysAgo));
/** An instant `days` days before the query clock (21:00 or 22:00 in New York, on the day `days` days before today). */
const ago = (days: number) => new Date(NOW - days * DAY_MS).toISOString();

const f = useFixture();
const shop = useSeededStore(f, 'SHOP_T', {
  timeZone: TZ,
  now: NOW,
  seed: async () => {
    await f.apply('SHOP_T', TZ, [
      ...times(2, () => view(ago(BACK), 'P1', 'V1')),
      view(ago(BACK + 1), 'P2', 'V1'),
      view(ago(130), 'P3', 'V1'),
      // P01..P25 one view each, yesterday and today.
      ...Array.from({ length: 25 }, (_, i) => view(ago(i % 2), `P${String(i + 1).padStart(2, '0')}`, 'V2')),
    ]);
    await f.flush('SHOP_T');
  },
});

const top = (from: string, to: string, limit = 10) =>
  shop.get(`/v1/top?entity=product&metric=ViewCount&from=${from}&to=${to}&limit=${limit}`);

describe('GET /v1/top over the rankings kept', () => {
  it('answers 400 naming from for a range older than the rankings kept, never a list ranked from the days left', async () => {
    expect(day(0)).toBe('2024-03-15');
    // 150 to 120 days ago: every ranking of the range may have expired.
    const old = await top(day(150), day(120));
    expect(old.status).toBe(400);
    expect(old.body).toEqual(
      badRequest(
        'from',
        `top lists reach back ${BACK} days, to ${day(BACK)} (the daily rankings are kept ${RANK_TTL_DAYS} days), not to ${day(150)}`,
      ),
    );
    // A range straddling the limit: refused too, not ranked from the days that are left.
    expect((await top(day(BACK + 1), day(BACK - 30))).body).toMatchObject({ status: 400, field: 'from' });
    // From the oldest day kept (the store's today less BACK days; in UTC today is already 2024-03-16): listed.
    const oldest = await top(day(BACK), day(BACK - 30));
    expect(oldest.status).toBe(200);
    expect(oldest.body).toMatchObject({ from: day(BACK), items: [{ id: 'P1', value: 2 }] });
    // The length refusal comes first, as before.
    expect((await top(day(150), day(20))).body).toMatchObject({ status: 400, field: 'range', detail: expect.stringMatching(/131 days/) });
  });

  it('says so in the OpenAPI description of /v1/top', async () => {
    const doc = (await shop.app.inject({ method: 'GET', url: '/docs/json' })).json();
    const op = doc.paths['/v1/top'].get;
    expect(op.description).toContain(`more than ${BACK} days before today (in the store's time zone) is 400 naming from`);
    expect(op.parameters.find((p: { name: string }) => p.name === 'range').description).toContain(`at most ${BACK} days before today`);
  });
});

describe('GET /v1/top ties', () => {
  it('lists equal values by id from the first, a smaller limit giving a prefix', async () => {
    const ids = (body: { items: Array<{ id: string }> }) => body.items.map((x) => x.id);
    const ten = await top(day(6), day(0));
    expect(ids(ten.body)).toEqual(['P01', 'P02', 'P03', 'P04', 'P05', 'P06', 'P07', 'P08', 'P09', 'P10']);
    expect(ids((await top(day(6), day(0), 5)).body)).toEqual(ids(ten.body).slice(0, 5));
  });
});

describe('GET /v1/top of a ranked visitor entity under a history limit', () => {
  it('ranks and sums only the days the store keeps, as totals reads them', async () => {
    // Custom rules that rank visitors; the store keeps one month (March), and it is March 5th.
    const rules = compileRules({
      ...defaultRules,
      entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor, rank: true } },
    });
    const buckets = new BucketStore({ redis: f.redis, rules, prefix: 'qv' });
    const now = Date.parse('2024-03-05T12:00:00Z');
    const read = (await f.tenant('SHOP_TV')).read;
    await updateTenant(f.db, 'SHOP_TV', { historyMonths: 1 });
    await buckets.registerStore('SHOP_TV');
    const events = [
      ...times(5, () => view('2024-02-20T10:00:00Z', 'P1', 'OLD')),
      ...times(2, () => view('2024-03-04T10:00:00Z', 'P1', 'NEW')),
    ];
    const batch = rollup(rules, 'SHOP_TV', 'UTC', events);
    expect((await buckets.apply('SHOP_TV', 'tv', batch, { now: Date.now(), dedupeTtlSeconds: 3_600 })).applied).toBe(true);
    const dynamo = { client: f.client, table: f.table, meter: createDynamoMeter() };
    const a = await f.app({ now: () => now, query: { buckets, dynamo, rules, historyMemo: new HistoryMemo() } });
    const get = async (url: string) => (await a.inject({ method: 'GET', url, headers: bearer(read) })).json();
    // February 20th is in last30d but no longer kept: OLD is neither ranked nor counted.
    const top = await get('/v1/top?entity=visitor&metric=ViewCount');
    expect(top).toMatchObject({ range: 'last30d', from: '2024-03-01', to: '2024-03-05', items: [{ id: 'NEW', value: 2 }] });
    expect(top.items).toHaveLength(1);
    const totals = await get('/v1/totals?entity=visitor&ids=OLD,NEW&metrics=ViewCount');
    expect(totals).toMatchObject({
      from: '2024-03-01',
      items: [
        { id: 'OLD', values: { ViewCount: 0 } },
        { id: 'NEW', values: { ViewCount: 2 } },
      ],
    });
    // A range wholly before the months kept is 400 naming from, as for totals.
    expect(await get('/v1/top?entity=visitor&metric=ViewCount&from=2024-02-10&to=2024-02-25')).toMatchObject({
      status: 400,
      field: 'from',
    });
  });
});

describe('GET /v1/top over TOP_MAX_MEMBERS', () => {
  it('answers 400 naming from, asking for a narrower range, when the rankings hold more members in all; nothing written', async () => {
    // Today P1..P6, yesterday P1..P3, 2 days ago P7..P10: the daily rankings hold 6, 3 and 4 ids (13 in all).
    const read = (await f.tenant('SHOP_TM', TZ)).read;
    const ids = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `P${from + i}`);
    await f.apply('SHOP_TM', TZ, [
      ...ids(1, 6).flatMap((id, i) => times(i + 1, () => view(ago(0), id, 'V1'))),
      ...ids(1, 3).map((id) => view(ago(1), id, 'V2')),
      ...ids(7, 10).map((id) => view(ago(2), id, 'V3')),
    ]);
    const query = (topMaxMembers?: number) => ({
      buckets: f.buckets,
      dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() },
      rules: f.rules,
      historyMemo: new HistoryMemo(),
      ...(topMaxMembers === undefined ? {} : { topMaxMembers }),
    });
    const bounded = await f.app({ now: () => NOW, query: query(12) });
    const unbounded = await f.app({ now: () => NOW, query: query() });
    const get = async (a: QueryApiApp, from: number, to: number) => {
      const url = `/v1/top?entity=product&metric=ViewCount&from=${day(from)}&to=${day(to)}`;
      const res = await a.inject({ method: 'GET', url, headers: bearer(read) });
      return { status: res.statusCode, type: res.headers['content-type'], body: res.json() };
    };
    const keys = async () => (await f.redis.keys('*')).sort();
    const unions = async () => Number(/^cmdstat_zunionstore:calls=(\d+)/m.exec(await f.redis.info('commandstats'))?.[1] ?? 0);

    // 2 days ago to today: 13 ids in all, over the 12 allowed. The union is never run, and no key is left.
    const [before, calls] = [await keys(), await unions()];
    const refused = await get(bounded, 2, 0);
    expect(refused.status).toBe(400);
    expect(refused.type).toMatch(/^application\/problem\+json/);
    expect(refused.body).toEqual(
      badRequest(
        'from',
        `the daily rankings of ${day(2)} to ${day(0)} hold 13 product ids (summed over the days), more than the 12 one top list ranks at once (TOP_MAX_MEMBERS): narrow the range (a later from, or a shorter named range)`,
      ),
    );
    expect(await unions()).toBe(calls);
    expect(await keys()).toEqual(before);
    // Yesterday and today: 9 ids, under the bound: the list as without one.
    const fits = await get(bounded, 1, 0);
    expect(fits.status).toBe(200);
    expect(fits.body).toMatchObject({
      from: day(1),
      to: day(0),
      items: [
        { id: 'P6', value: 6 },
        { id: 'P5', value: 5 },
        { id: 'P3', value: 4 },
        { id: 'P4', value: 4 },
        { id: 'P2', value: 3 },
        { id: 'P1', value: 2 },
      ],
    });
    expect(fits.body).toEqual((await get(unbounded, 1, 0)).body);
    // Without a bound configured, the default (TOP_MAX_MEMBERS of @tally/buckets, 300,000) lets the 13 through.
    expect((await get(unbounded, 2, 0)).body.items).toHaveLength(10);
  });
});
