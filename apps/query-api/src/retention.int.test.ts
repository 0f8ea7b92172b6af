import { DeleteItemCommand, GetItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { createDynamoMeter, writeRow } from '@tally/dynamo';
import { dateOf, EXPIRES_ATTR, toEpochDay } from '@tally/key-layout';
import { clampToRetention, HistoryMemo, QueryError, readTotals, resolveMetrics } from '@tally/query';
import { compileRules, defaultRules, rollup } from '@tally/schema';
import { changeTenant, createTenantDirectory, getTenant, restampRetention, updateTenant, visitorExpiry } from '@tally/tenants';
import { beforeAll, describe, expect, it } from 'vitest';
import { bearer, times, useFixture, view } from '../test/fixture';
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
  await flushAsWriter('SHOP_R', NOW);
  app = await f.app({ now: () => NOW });
});

/** Flushes every due row of the store as the writer does at `now`, with its expiry (the tenant's historyMonths then). */
async function flushAsWriter(store: string, now: number): Promise<void> {
  const expiryOf = visitorExpiry(createTenantDirectory({ dynamo: f.client, table: f.table, cacheTtlMs: 0 }), f.rules, () => now);
  const later = Date.now() + 3_600_000; // past the fixture's bucket clock
  expect(await f.buckets.seal(store, { now: later, minAgeMs: 0 })).toBeDefined();
  await f.buckets.foldSealed(store, { now: later });
  for (const { pk } of await f.buckets.dueRows(store, Number.MAX_SAFE_INTEGER)) {
    const out = await f.buckets.readOutbox(store, pk);
    const expiresAt = await expiryOf(store, pk);
    await writeRow({ client: f.client, table: f.table, meter: createDynamoMeter(), expiresAt }, pk, out.entries);
    await f.buckets.ackOutbox(
      store,
      pk,
      out.entries.map((e) => e.field),
      later,
    );
  }
}

/** What DynamoDB's TTL has deleted of a row by `now` (it may lag, never lead): every item whose expiry has passed. */
async function expireAsTtl(pk: string, now: number): Promise<string[]> {
  const { Items = [] } = await f.client.send(
    new QueryCommand({ TableName: f.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pk } } }),
  );
  const gone = Items.filter((it) => it[EXPIRES_ATTR]?.N !== undefined && Number(it[EXPIRES_ATTR].N) * 1000 <= now);
  for (const it of gone) await f.client.send(new DeleteItemCommand({ TableName: f.table, Key: { pk: it['pk']!, sk: it['sk']! } }));
  return gone.map((it) => it['sk']!.S!);
}

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

describe('a raised history limit', () => {
  // SHOP_RH keeps 3 months through 2024: TTL deletes each month item once its month has left that window. In January
  // 2025 the store raises its limit to 24 months: the window now reaches back to February 2023, but what TTL deleted is
  // gone, while TOTAL (refreshed by every write of the visitor) still holds it in its year and all-time cells.
  const RAISED_AT = Date.parse('2025-01-20T12:00:00Z');
  const now = RAISED_AT + 7 * 86_400_000;
  const PK = 'SHOP_RH#visitor#V2';
  let rh: QueryApiApp;
  let rhKey: string;
  const get = async (url: string) => (await rh.inject({ method: 'GET', url, headers: bearer(rhKey) })).json();

  beforeAll(async () => {
    rhKey = (await f.tenant('SHOP_RH')).read;
    await updateTenant(f.db, 'SHOP_RH', { historyMonths: 3 });
    await f.apply(
      'SHOP_RH',
      'UTC',
      ['2024-02-10', '2024-06-10', '2024-11-10', '2025-01-15'].map((d) => view(`${d}T10:00:00Z`, 'P1', 'V2')),
    );
    await flushAsWriter('SHOP_RH', RAISED_AT);
    // By the time the limit is raised TTL has deleted February's and June's items; November's is still kept.
    expect(await expireAsTtl(PK, RAISED_AT)).toEqual(['M2024-02', 'M2024-06']);
    await updateTenant(f.db, 'SHOP_RH', { historyMonths: 24 });
    rh = await f.app({ now: () => now });
  });

  it("visitor totals count only the month items kept, never TOTAL's year cell of 2024 (which still holds February and June)", async () => {
    const total = await get('/v1/series?entity=visitor:V2&range=allTime&granularity=total&metrics=ViewCount');
    expect(total).toMatchObject({ from: '2023-02-01', to: '2025-01-27', totals: { ViewCount: 2 } }); // not 4
    // The same as series by year and as segment rules over all time.
    const years = await get('/v1/series?entity=visitor:V2&range=allTime&granularity=year&metrics=ViewCount');
    expect(years.points.map((p: { period: string; values: { ViewCount: number } }) => [p.period, p.values.ViewCount])).toEqual([
      ['2023', 0],
      ['2024', 1],
      ['2025', 1],
    ]);
    const seg = await rh.inject({
      method: 'POST',
      url: '/v1/segments/evaluate',
      headers: bearer(rhKey),
      payload: { visitor: 'V2', segments: [{ name: 's', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>=', value: 1 }] }] },
    });
    expect(seg.json().segments[0].rules[0].actual).toBe(2);
    // A dated range with the whole of 2024 in it.
    const dated = await get('/v1/series?entity=visitor:V2&from=2023-12-01&to=2025-01-27&granularity=total&metrics=ViewCount');
    expect(dated.totals.ViewCount).toBe(2);
    // Other entities still read whole years from TOTAL (nothing of theirs expires).
    expect(
      (await get('/v1/series?entity=product:P1&from=2024-01-01&to=2024-12-31&granularity=total&metrics=ViewCount')).totals.ViewCount,
    ).toBe(3);
  });

  it('readTotals with yearsFromMonths sums the kept month items; without it whole years come from TOTAL', async () => {
    const deps = { buckets: f.buckets, dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() }, rules: f.rules };
    const metrics = resolveMetrics(f.rules, ['ViewCount']);
    const range = { from: dateOf(2023, 2, 1), to: dateOf(2025, 1, 27) };
    const of = async (yearsFromMonths: boolean) =>
      (await readTotals(deps, { store: 'SHOP_RH', pks: [PK], metrics, range, yearsFromMonths })).rows[0]!.values['ViewCount'];
    expect(await of(true)).toBe(2n);
    expect(await of(false)).toBe(4n); // Y2024 of TOTAL: for entities whose months never expire, the same as their sum
    // The longest window (1,200 months) is 1,200 month items a row: one visitor fits the default maximum of 2,000
    // items per query, two are refused before anything is read, as is one under a lower configured maximum.
    const longest = clampToRetention('all', { historyMonths: 1200 }, 'UTC', now);
    const one = await readTotals(deps, { store: 'SHOP_RH', pks: [PK], metrics, range: longest, yearsFromMonths: true });
    expect({ value: one.rows[0]!.values['ViewCount'], requests: one.dynamoRequests }).toEqual({ value: 2n, requests: 12 });
    const refused = async (d: typeof deps & { maxItemsPerQuery?: number }, pks: string[]) =>
      readTotals(d, { store: 'SHOP_RH', pks, metrics, range: longest, yearsFromMonths: true }).then(
        () => 'answered',
        (err: unknown) => (err instanceof QueryError ? { field: err.field, message: err.message } : err),
      );
    expect(await refused(deps, [PK, 'SHOP_RH#visitor#V3'])).toEqual({
      field: 'ids',
      message: expect.stringContaining('would read 2400 DynamoDB items (2 rows × 1200 items for the range); at most 2000 per query'),
    });
    expect(await refused({ ...deps, maxItemsPerQuery: 1000 }, [PK])).toMatchObject({ field: 'range' });
  });

  it('a lowered limit ignores the month items still in DynamoDB before the new window (their TTL is not due, or lags)', async () => {
    await updateTenant(f.db, 'SHOP_RH', { historyMonths: 2 }); // December 2024 and January 2025; November's item is still there
    try {
      expect((await get('/v1/series?entity=visitor:V2&range=allTime&granularity=total&metrics=ViewCount')).totals.ViewCount).toBe(1);
      expect((await get('/v1/totals?entity=visitor&ids=V2&range=allTime&metrics=ViewCount')).items[0].values.ViewCount).toBe(1);
    } finally {
      await updateTenant(f.db, 'SHOP_RH', { historyMonths: 24 });
    }
  });

  // GET /v1/totals reads through readTotals too (on the old code it answered TOTAL's 4).
  it('GET /v1/totals of a visitor agrees with its series and segments', async () => {
    expect((await get('/v1/totals?entity=visitor&ids=V2&range=allTime&metrics=ViewCount')).items[0].values.ViewCount).toBe(2);
  });
});

describe('a history limit lifted (historyMonths -> for ever)', () => {
  // SHOP_RF keeps one month of visitor history. V1 viewed 5 times in December 2024 (TTL has deleted that month), 3
  // times in February 2025 (due when the limit is lifted, but TTL lags: DynamoDB still holds it) and twice in March.
  // On 2025-03-20 the operator lifts the limit and the restamp removes every stamp. The visitor's TOTAL item still
  // holds all 10 views: the first day the limit kept then, 2025-03-01, stays the first day of V1's history.
  const LIFTED_AT = Date.parse('2025-03-20T12:00:00Z');
  const now = Date.parse('2025-04-19T12:00:00Z');
  const PK = 'SHOP_RF#visitor#V1';
  let rf: QueryApiApp;
  let rfKey: string;
  const get = async (url: string) => (await rf.inject({ method: 'GET', url, headers: bearer(rfKey) })).json();
  const allTime = async () => (await get('/v1/totals?entity=visitor&ids=V1&range=allTime&metrics=ViewCount')).items[0].values.ViewCount;
  const points = async (query: string) =>
    (await get(`/v1/series?entity=visitor:V1&metrics=ViewCount&${query}`)).points.map(
      (p: { period: string; values: { ViewCount: number } }) => [p.period, p.values.ViewCount],
    );
  const segment = async () =>
    (
      await rf.inject({
        method: 'POST',
        url: '/v1/segments/evaluate',
        headers: bearer(rfKey),
        payload: { visitor: 'V1', segments: [{ name: 'loyal', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>=', value: 5 }] }] },
      })
    ).json().segments[0];

  beforeAll(async () => {
    rfKey = (await f.tenant('SHOP_RF')).read;
    await updateTenant(f.db, 'SHOP_RF', { historyMonths: 1 });
    await f.apply('SHOP_RF', 'UTC', [
      ...times(5, () => view('2024-12-05T10:00:00Z', 'P1', 'V1')),
      ...times(3, () => view('2025-02-10T10:00:00Z', 'P1', 'V1')),
      ...times(2, () => view('2025-03-10T10:00:00Z', 'P1', 'V1')),
    ]);
    await flushAsWriter('SHOP_RF', LIFTED_AT);
    expect(await expireAsTtl(PK, Date.parse('2025-02-01T00:00:00Z'))).toEqual(['M2024-12']);
    rf = await f.app({ now: () => LIFTED_AT });
    expect({ allTime: await allTime(), segment: (await segment()).rules[0].actual }).toEqual({ allTime: 2, segment: 2 });

    // The operator lifts the limit; the restamp runs (as the dynamo-writer would, after its settle time).
    await changeTenant(f.db, 'SHOP_RF', { historyMonths: null }, { now: () => LIFTED_AT });
    await restampRetention(f.db, 'SHOP_RF', { settleMs: 0, now: () => LIFTED_AT, rules: f.rules });
    expect(await attr(PK, 'M2025-02')).toBeUndefined(); // kept for ever now, though it had expired
    // A view after the lift counts as any other.
    await f.apply('SHOP_RF', 'UTC', [view('2025-04-15T10:00:00Z', 'P1', 'V1')]);
    await flushAsWriter('SHOP_RF', now);
    rf = await f.app({ now: () => now });
  });

  it('records the first day the limit kept on the tenant', async () => {
    expect(await getTenant(f.db, 'SHOP_RF')).toMatchObject({ historyTrimmedBefore: '2025-03-01' });
  });

  it("counts no month the limit had expired: all time and years are V1's months kept, not TOTAL's 11", async () => {
    expect(await allTime()).toBe(3);
    expect(await points('range=allTime&granularity=year')).toEqual([['2025', 3]]);
    expect(await points('from=2024-10-01&to=2025-04-19&granularity=month')).toEqual([
      ['2025-03', 2],
      ['2025-04', 1],
    ]);
    expect((await get('/v1/series?entity=visitor:V1&range=allTime&granularity=total&metrics=ViewCount')).totals.ViewCount).toBe(3);
    expect((await get('/v1/series?entity=visitor:V1&range=thisYear&granularity=total&metrics=ViewCount')).totals.ViewCount).toBe(3);
    // A range wholly before the first day kept is refused, as under a limit.
    const before = await rf.inject({
      method: 'GET',
      url: '/v1/series?entity=visitor:V1&from=2024-12-01&to=2025-02-28&metrics=ViewCount',
      headers: bearer(rfKey),
    });
    expect({ status: before.statusCode, field: before.json().field }).toEqual({ status: 400, field: 'from' });
    // Other entities never expired anything: all time is TOTAL's.
    expect((await get('/v1/totals?entity=product&ids=P1&range=allTime&metrics=ViewCount')).items[0].values.ViewCount).toBe(11);
  });

  it('segment rules on all time do not match on the expired views', async () => {
    const seg = await segment();
    expect({ matched: seg.matched, actual: seg.rules[0].actual }).toEqual({ matched: false, actual: 3 });
  });
});

describe('a second entity keyed by the visitor alone (shopper)', () => {
  // Rules that also count views on a ranked shopper row keyed by the visitor id: its items are the visitor's history as
  // much as the visitor row's. SHOP_RS keeps two months, February and March 2024 (as SHOP_R); later its limit is lifted.
  const shopperRules = compileRules({
    ...defaultRules,
    entities: { ...defaultRules.entities, shopper: { key: ['visitor'], flush: { kind: 'bucket' }, rank: true } },
    events: {
      ...defaultRules.events,
      view: { ...defaultRules.events.view, counters: [...defaultRules.events.view.counters, { entity: 'shopper', metric: 'ViewCount' }] },
    },
  });
  let rs: QueryApiApp;
  let rsKey: string;
  const get = async (url: string) => (await rs.inject({ method: 'GET', url, headers: bearer(rsKey) })).json();
  const years = (r: { points: Array<{ period: string; values: { ViewCount: number } }> }) =>
    r.points.map((p) => [p.period, p.values.ViewCount]);

  beforeAll(async () => {
    rsKey = (await f.tenant('SHOP_RS')).read;
    await updateTenant(f.db, 'SHOP_RS', { historyMonths: 2 });
    const buckets = new BucketStore({ redis: f.redis, rules: shopperRules, prefix: 'qs' });
    await buckets.registerStore('SHOP_RS');
    const events = ['2023-12-10', '2024-01-20', '2024-02-05', '2024-03-10'].map((d) => view(`${d}T10:00:00Z`, 'P1', 'V1'));
    const at = Date.now();
    const batch = rollup(shopperRules, 'SHOP_RS', 'UTC', events);
    expect((await buckets.apply('SHOP_RS', 'rs', batch, { now: at, dedupeTtlSeconds: 3_600 })).applied).toBe(true);
    // Every row in DynamoDB, every month item still there (dynalite runs no TTL).
    expect(await buckets.seal('SHOP_RS', { now: at + 1_000, minAgeMs: 0 })).toBeDefined();
    await buckets.foldSealed('SHOP_RS', { now: at + 2_000 });
    const dynamo = { client: f.client, table: f.table, meter: createDynamoMeter() };
    for (const { pk } of await buckets.dueRows('SHOP_RS', Number.MAX_SAFE_INTEGER)) {
      const out = await buckets.readOutbox('SHOP_RS', pk);
      await writeRow(dynamo, pk, out.entries);
      await buckets.ackOutbox(
        'SHOP_RS',
        pk,
        out.entries.map((e) => e.field),
        at + 3_000,
      );
    }
    rs = await f.app({ now: () => NOW, query: { buckets, dynamo, rules: shopperRules, historyMemo: new HistoryMemo() } });
  });

  it("cuts its series, totals and top lists at the retention start, as the visitor entity's", async () => {
    for (const entity of ['visitor', 'shopper']) {
      const all = await get(`/v1/series?entity=${entity}:V1&range=allTime&granularity=total&metrics=ViewCount`);
      expect(all, entity).toMatchObject({ from: '2024-02-01', to: '2024-03-15', totals: { ViewCount: 2 } });
      expect(years(await get(`/v1/series?entity=${entity}:V1&range=allTime&granularity=year&metrics=ViewCount`)), entity).toEqual([
        ['2024', 2],
      ]);
      expect((await get(`/v1/totals?entity=${entity}&ids=V1&range=last3m&metrics=ViewCount`)).items[0].values.ViewCount, entity).toBe(2);
      const before = await get(`/v1/series?entity=${entity}:V1&from=2023-12-01&to=2024-01-31&metrics=ViewCount`);
      expect({ status: before.status, field: before.field }, entity).toEqual({ status: 400, field: 'from' });
    }
    // January's view is in the range asked for, not in the months kept.
    expect(await get('/v1/top?entity=shopper&metric=ViewCount&from=2024-01-01&to=2024-03-15')).toMatchObject({
      from: '2024-02-01',
      items: [{ id: 'V1', value: 2 }],
    });
    expect((await get('/v1/series?entity=product:P1&range=allTime&granularity=total&metrics=ViewCount')).totals.ViewCount).toBe(4);
  });

  it("once the limit is lifted, counts from the first day it kept (historyTrimmedBefore), as the visitor entity's", async () => {
    await changeTenant(f.db, 'SHOP_RS', { historyMonths: null }, { now: () => NOW });
    expect(await getTenant(f.db, 'SHOP_RS')).toMatchObject({ historyTrimmedBefore: '2024-02-01' });
    for (const entity of ['visitor', 'shopper']) {
      // All time and years from the month items since that day, not TOTAL's 4.
      expect((await get(`/v1/totals?entity=${entity}&ids=V1&range=allTime&metrics=ViewCount`)).items[0].values.ViewCount, entity).toBe(2);
      expect(years(await get(`/v1/series?entity=${entity}:V1&range=allTime&granularity=year&metrics=ViewCount`)), entity).toEqual([
        ['2024', 2],
      ]);
      const before = await get(`/v1/series?entity=${entity}:V1&from=2023-12-01&to=2024-01-31&metrics=ViewCount`);
      expect({ status: before.status, field: before.field }, entity).toEqual({ status: 400, field: 'from' });
    }
    expect(await get('/v1/top?entity=shopper&metric=ViewCount&from=2024-01-01&to=2024-03-15')).toMatchObject({
      from: '2024-02-01',
      items: [{ id: 'V1', value: 2 }],
    });
  });
});
