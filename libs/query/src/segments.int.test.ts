import { writeRowWithSketches } from '@tally/dynamo';
import { compileRules, defaultRules, rollup, rollupDistinct, type NormalizedEvent } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { clampToRetention, evaluateSegments, HistoryMemo, namedRange, readSeries, resolveMetrics, type QueryDeps } from './index';
import { useQueryFixture } from './test-fixtures';

// Visitors with a distinct count of their own (the products they viewed) and a keyed, scaled metric (their spend per
// product, minor units), their rows flushed every bucket.
const rules = compileRules({
  ...defaultRules,
  metrics: {
    ...defaultRules.metrics,
    UniqueProducts: { code: 'up', description: 'distinct products a visitor viewed' },
    ProductSpend: { code: 'ps', scale: 2, description: 'spend of a visitor per product' },
  },
  entities: {
    ...defaultRules.entities,
    visitor: { ...defaultRules.entities.visitor, flush: { kind: 'bucket' }, distinct: { UniqueProducts: 'product' } },
  },
  events: {
    ...defaultRules.events,
    order_item: {
      ...defaultRules.events.order_item,
      counters: [...defaultRules.events.order_item.counters, { entity: 'visitor', metric: 'ProductSpend', by: 'product', op: 'sum' }],
    },
  },
});
const fixture = useQueryFixture(rules);
const NOW = Date.parse('2024-03-15T12:00:00Z');
const PK = 'S#visitor#V1';
const view = (product: string, ts = NOW - 3_600_000): NormalizedEvent => ({ type: 'view', ts, dims: { product, visitor: 'V1' } });

let batch = 0;
let clock = NOW; // the buckets' clock: every apply and seal one second later
/** The aggregator's path: the counts, then the distinct members. */
async function send(deps: QueryDeps, events: NormalizedEvent[]) {
  await deps.buckets.registerStore('S');
  await deps.buckets.apply('S', `b${++batch}`, rollup(rules, 'S', 'UTC', events), { now: (clock += 1000), dedupeTtlSeconds: 3600 });
  await deps.buckets.sketches.add('S', rollupDistinct(rules, 'S', 'UTC', events));
}

/** The writer's path for the visitor's row (apps/dynamo-writer); `ackOutbox: false` stops it between its two acks. */
async function flush(deps: QueryDeps, ackOutbox = true) {
  await deps.buckets.seal('S', { now: (clock += 1000), minAgeMs: 0 });
  await deps.buckets.foldSealed('S', { now: clock });
  const out = await deps.buckets.readOutbox('S', PK);
  const [live] = await deps.buckets.sketches.read('S', [PK]);
  const r = await writeRowWithSketches(deps.dynamo, (g, w) => deps.buckets.sketches.union('S', g, w), PK, out.entries, live!);
  await deps.buckets.sketches.ack('S', PK, r.sketchesWritten);
  if (ackOutbox)
    await deps.buckets.ackOutbox(
      'S',
      PK,
      out.entries.map((e) => e.field),
      clock,
    );
}

type Range = 'today' | 'last3m' | 'allTime';
const rule = (range: Range, value = 3) => ({ metric: 'UniqueProducts', range, op: '>=' as const, value });
const evaluate = (deps: QueryDeps, ranges: Range[], historyMonths?: number) =>
  evaluateSegments(deps, {
    store: 'S',
    pk: PK,
    timeZone: 'UTC',
    now: NOW,
    cacheTtlSeconds: 60,
    segments: [{ name: 'browsers', match: 'all', rules: ranges.map((r) => rule(r)) }],
    ...(historyMonths === undefined ? {} : { historyMonths }),
  });
const actuals = async (deps: QueryDeps, ranges: Range[], historyMonths?: number) =>
  (await evaluate(deps, ranges, historyMonths)).segments[0]!.rules.map((r) => r.actual);

/** UniqueProducts of the visitor as a series (granularity total) answers it, the range clamped as the series route does. */
async function seriesValue(deps: QueryDeps, range: Range, historyMonths?: number) {
  const asked = range === 'allTime' ? 'all' : namedRange(range, 'UTC', NOW);
  const s = await readSeries(deps, {
    store: 'S',
    pk: PK,
    metrics: resolveMetrics(rules, ['UniqueProducts']),
    range: clampToRetention(asked, { historyMonths }, 'UTC', NOW),
    granularity: 'total',
    yearsFromMonths: historyMonths !== undefined,
  });
  return String(s.totals['UniqueProducts']);
}

describe('segment rules on a distinct count of the visitor', () => {
  it('count what a series of the row counts: live, written, from a warm cache, and between the writer’s two acks', async () => {
    const deps = { ...(await fixture.deps('sd')), historyMemo: new HistoryMemo() };
    const ranges: Range[] = ['today', 'last3m', 'allTime'];
    await send(deps, [view('P1'), view('P2'), view('P2'), view('P3')]);
    const live = await evaluate(deps, ranges);
    expect(live.segments[0]).toMatchObject({ matched: true, rules: ranges.map(() => ({ actual: '3', matched: true })) });

    await flush(deps);
    expect(await actuals(deps, ranges)).toEqual(['3', '3', '3']);
    const warm = await evaluate(deps, ranges);
    expect(warm.cache).toBe('hit');
    expect(warm.segments[0]!.rules.map((r) => r.actual)).toEqual(['3', '3', '3']);

    // A product a month ago: in last3m and all time, not today.
    await send(deps, [view('P4'), view('P9', NOW - 30 * 86_400_000)]);
    expect(await actuals(deps, ranges)).toEqual(['4', '5', '5']);
    // The writer has moved the live sketches into DynamoDB and forgotten them in Redis, but not yet acked the outbox
    // (which bumps the cache version): the cached history does not hold them, the live sketches no longer do.
    await flush(deps, false);
    expect(await deps.buckets.sketches.read('S', [PK])).toEqual([[]]);
    const between = await evaluate(deps, ranges);
    expect(between.cache).toBe('hit');
    expect(between.segments[0]!.rules.map((r) => r.actual)).toEqual(['4', '5', '5']);
    for (const r of ranges) expect(await seriesValue(deps, r)).toBe(between.segments[0]!.rules[ranges.indexOf(r)]!.actual);
  });

  it('count only the months a store keeps, as a series of the visitor does', async () => {
    const deps = await fixture.deps('sr');
    await send(deps, [view('P1'), view('P2'), view('P3', NOW - 120 * 86_400_000)]);
    await flush(deps);
    expect(await actuals(deps, ['allTime', 'last3m'])).toEqual(['3', '2']);
    expect(await actuals(deps, ['allTime', 'last3m'], 2)).toEqual(['2', '2']);
    expect(await seriesValue(deps, 'allTime', 2)).toBe('2');
  });

  it('read nothing more for rules without a distinct count (a warm history: no DynamoDB request)', async () => {
    const deps = await fixture.deps('sn');
    await send(deps, [view('P1'), view('P2')]);
    await flush(deps);
    const segment = (metric: string) => [
      { name: 'n', match: 'all' as const, rules: [{ metric, range: 'today' as const, op: '>=' as const, value: 1 }] },
    ];
    const req = { store: 'S', pk: PK, timeZone: 'UTC', now: NOW, cacheTtlSeconds: 60 };
    await evaluateSegments(deps, { ...req, segments: segment('ViewCount') });
    expect(await evaluateSegments(deps, { ...req, segments: segment('ViewCount') })).toMatchObject({ cache: 'hit', dynamoRequests: 0 });
    expect(await evaluateSegments(deps, { ...req, segments: segment('UniqueProducts') })).toMatchObject({
      cache: 'hit',
      dynamoRequests: 1,
    });
  });
});

describe('segment rules on a keyed, scaled metric', () => {
  it("compare in the metric's units, also when the key is written into the name", async () => {
    const deps = await fixture.deps('sk');
    const item: NormalizedEvent = { type: 'order_item', ts: NOW - 3_600_000, dims: { product: 'P1', visitor: 'V1' }, value: '19.99' };
    await send(deps, [item]);
    const r = await evaluateSegments(deps, {
      store: 'S',
      pk: PK,
      timeZone: 'UTC',
      now: NOW,
      cacheTtlSeconds: 60,
      segments: [
        {
          name: 'spent 100 on P1',
          match: 'any',
          rules: [
            { metric: 'ProductSpend', key: 'P1', range: 'today', op: '>=', value: 100 },
            { metric: 'ProductSpend#P1', range: 'today', op: '>=', value: 100 },
          ],
        },
      ],
    });
    expect(r.segments[0]).toMatchObject({
      matched: false,
      rules: [
        { actual: '19.99', matched: false },
        { actual: '19.99', matched: false },
      ],
    });
  });
});
