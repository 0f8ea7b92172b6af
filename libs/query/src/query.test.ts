import { compileRules, defaultRules } from '@tally/schema';
import {
  addDays,
  dateOf,
  dayAttr,
  formatDate,
  fromEpochDay,
  monthAttr,
  monthSk,
  toEpochDay,
  TOTAL_SK,
  totalAttr,
  yearAttr,
} from '@tally/key-layout';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkMetricName,
  coverOf,
  explicitRange,
  keyedByOf,
  plainMetricsOf,
  QueryError,
  rankedEntitiesOf,
  resolveMetrics,
  resolveRange,
  retainedRange,
  retainedVisitorRange,
  storeEntityOf,
} from './index';

const rules = compileRules(defaultRules);
const NOW = Date.parse('2024-03-15T12:00:00Z');

const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    if (err instanceof QueryError) return err.field;
    throw err;
  }
  return 'no error';
};

describe('rules introspection', () => {
  it('knows the store entity, which metrics are keyed, which an entity counts and which entities are ranked', () => {
    expect(storeEntityOf(rules)).toBe('store');
    expect(keyedByOf(rules, 'ProductViews')).toBe('product');
    expect(keyedByOf(rules, 'ViewCount')).toBeNull();
    expect(plainMetricsOf(rules, 'product')).toEqual(['ViewCount', 'OrderCount', 'Revenue']);
    expect(plainMetricsOf(rules, 'visitor')).toEqual(['ViewCount', 'PageViewCount', 'OrderCount', 'Revenue']);
    expect(rankedEntitiesOf(rules)).toEqual(['product', 'page']);
  });

  it('checks metric names: known, keyed exactly when the metric is, keys of id characters', () => {
    expect(checkMetricName(rules, 'ProductViews#P:1', 'metrics')).toEqual({ base: 'ProductViews', sub: 'P:1' });
    expect(checkMetricName(rules, 'ViewCount', 'metrics')).toEqual({ base: 'ViewCount', sub: undefined });
    expect(fieldOf(() => checkMetricName(rules, 'Nope', 'm', 'k'))).toBe('m');
    expect(fieldOf(() => checkMetricName(rules, 'toString', 'm', 'k'))).toBe('m');
    expect(fieldOf(() => checkMetricName(rules, 'ProductViews', 'm', 'k'))).toBe('k');
    expect(fieldOf(() => checkMetricName(rules, 'ViewCount#P1', 'm', 'k'))).toBe('k');
    expect(fieldOf(() => checkMetricName(rules, 'ProductViews#P 1', 'm', 'k'))).toBe('k');
    expect(resolveMetrics(rules, ['ViewCount', 'ProductViews#P1'])).toEqual([
      { name: 'ViewCount', attr: rules.attrMetric('ViewCount') },
      { name: 'ProductViews#P1', attr: rules.attrMetric('ProductViews', 'P1') },
    ]);
    expect(fieldOf(() => resolveMetrics(rules, ['ProductViews'], 'metric'))).toBe('metric');
  });
});

describe('resolveRange', () => {
  it("resolves named ranges in the store's time zone, explicit dates, and allTime as a range of its own", () => {
    expect(resolveRange({ range: 'today' }, 'Pacific/Kiritimati', NOW, 'last30d')).toMatchObject({
      name: 'today',
      range: { from: { year: 2024, month: 3, day: 16 } },
    });
    expect(resolveRange({}, 'UTC', NOW, 'last30d')).toMatchObject({
      name: 'last30d',
      range: { from: { month: 2, day: 15 }, to: { month: 3, day: 15 } },
    });
    expect(resolveRange({ from: '2024-02-28', to: '2024-03-01' }, 'UTC', NOW, 'last30d')).toMatchObject({
      name: null,
      range: { from: { doy: 59 }, to: { doy: 61 } },
    });
    expect(resolveRange({ range: 'allTime' }, 'UTC', NOW, 'last30d')).toEqual({ name: 'allTime', range: 'all' });
    expect(fieldOf(() => resolveRange({ range: 'today', to: '2024-01-01' }, 'UTC', NOW, 'last30d'))).toBe('range');
    expect(fieldOf(() => resolveRange({ to: '2024-01-01' }, 'UTC', NOW, 'last30d'))).toBe('from');
    expect(fieldOf(() => resolveRange({ from: '2024-01-01' }, 'UTC', NOW, 'last30d'))).toBe('to');
  });
});

describe('retainedVisitorRange', () => {
  const dates = (r: ReturnType<typeof retainedVisitorRange>) =>
    r.range === 'all' ? r : { ...r, range: { from: formatDate(r.range.from), to: formatDate(r.range.to) } };
  const range = (from: string, to: string) => explicitRange(from, to);

  it("starts a visitor's history at the later of its limit's start and the day a lifted limit trimmed it before", () => {
    // No limit, none lifted: all time from TOTAL.
    expect(retainedVisitorRange('all', {}, 'UTC', NOW)).toEqual({ range: 'all', yearsFromMonths: false });
    // A limit of 2 months at 2024-03-15: from February.
    expect(dates(retainedVisitorRange('all', { historyMonths: 2 }, 'UTC', NOW))).toEqual({
      range: { from: '2024-02-01', to: '2024-03-15' },
      yearsFromMonths: true,
    });
    // A limit lifted, none now: from the day it had trimmed the history before, years from the months.
    expect(dates(retainedVisitorRange('all', { historyTrimmedBefore: '2023-11-01' }, 'UTC', NOW))).toEqual({
      range: { from: '2023-11-01', to: '2024-03-15' },
      yearsFromMonths: true,
    });
    // A limit set again after one was lifted: whichever start is later.
    expect(dates(retainedVisitorRange('all', { historyMonths: 12, historyTrimmedBefore: '2023-11-01' }, 'UTC', NOW)).range).toEqual({
      from: '2023-11-01',
      to: '2024-03-15',
    });
    expect(dates(retainedVisitorRange('all', { historyMonths: 2, historyTrimmedBefore: '2023-11-01' }, 'UTC', NOW)).range).toEqual({
      from: '2024-02-01',
      to: '2024-03-15',
    });
    // A range partly before the first day kept starts there; one wholly before it is refused, saying why.
    expect(dates(retainedVisitorRange(range('2023-10-01', '2023-12-31'), { historyTrimmedBefore: '2023-11-01' }, 'UTC', NOW))).toEqual({
      range: { from: '2023-11-01', to: '2023-12-31' },
      yearsFromMonths: true,
    });
    const refusal = (historyMonths?: number) => {
      try {
        retainedVisitorRange(range('2023-01-01', '2023-10-31'), { historyMonths, historyTrimmedBefore: '2023-11-01' }, 'UTC', NOW);
      } catch (err) {
        return err instanceof QueryError ? [err.field, err.message] : err;
      }
      return 'no error';
    };
    expect(refusal()).toEqual([
      'from',
      'visitor history before 2023-11-01 is not kept (it had expired under an earlier limit of this store)',
    ]);
    expect(refusal(2)).toEqual(['from', 'visitor history before 2024-02-01 is not kept (this store keeps 2 months)']);
    // A first day kept after today (a clock behind the one that lifted the limit): all time is that day alone.
    expect(dates(retainedVisitorRange('all', { historyTrimmedBefore: '2024-04-01' }, 'UTC', NOW)).range).toEqual({
      from: '2024-04-01',
      to: '2024-04-01',
    });
  });
});

describe('retainedRange', () => {
  it('cuts the rows of every entity whose items retention expires: keyed by the visitor, alone or with others', () => {
    const shopperRules = compileRules({
      ...defaultRules,
      entities: {
        ...defaultRules.entities,
        shopper: { key: ['visitor'], flush: { kind: 'bucket' } },
        basket: { key: ['visitor', 'product'], flush: { kind: 'bucket' } },
      },
    });
    const trimmed = { historyTrimmedBefore: '2023-11-01' };
    const cut = retainedVisitorRange('all', trimmed, 'UTC', NOW);
    // basket (key [visitor, product]) is not erasable, but its items expire: its queries are cut as the visitor's.
    for (const entity of ['visitor', 'shopper', 'basket'])
      expect(retainedRange(shopperRules, entity, 'all', trimmed, 'UTC', NOW), entity).toEqual(cut);
    for (const entity of ['store', 'product'])
      expect(retainedRange(shopperRules, entity, 'all', trimmed, 'UTC', NOW), entity).toEqual({ range: 'all', yearsFromMonths: false });
    // Under rules without it, a shopper is no visitor entity.
    expect(retainedRange(rules, 'shopper', 'all', trimmed, 'UTC', NOW)).toEqual({ range: 'all', yearsFromMonths: false });
    // The visitor entity keyed by the visitor and a site (nothing erasable): its items expire, its queries are cut.
    const flush = { kind: 'bucket' } as const;
    const bySite = compileRules({
      metrics: { ViewCount: {} },
      entities: { store: { key: [], flush }, visitor: { key: ['visitor', 'site'], flush } },
      events: {
        view: {
          dims: { visitor: 'required', site: 'required' },
          counters: [
            { entity: 'store', metric: 'ViewCount' },
            { entity: 'visitor', metric: 'ViewCount' },
          ],
        },
      },
    });
    expect(retainedRange(bySite, 'visitor', 'all', trimmed, 'UTC', NOW)).toEqual(cut);
    expect(retainedRange(bySite, 'store', 'all', trimmed, 'UTC', NOW)).toEqual({ range: 'all', yearsFromMonths: false });
  });
});

describe('coverOf', () => {
  const cellsOf = (from: string, to: string) => coverOf(explicitRange(from, to)).map((c) => `${c.sk} ${c.attr('v')}`);

  it('reads whole years from TOTAL, whole months from their month attribute, and only the days left over', () => {
    // The range of the issue: 2016-12-03..2026-12-02 is 29 days of Dec 2016, 2017-2025, Jan-Nov 2026 and 2 days.
    const cells = cellsOf('2016-12-03', '2026-12-02');
    expect(new Set(coverOf(explicitRange('2016-12-03', '2026-12-02')).map((c) => c.sk)).size).toBe(14);
    expect(cells.filter((c) => c.startsWith(`${TOTAL_SK} `))).toEqual(
      [2017, 2018, 2019, 2020, 2021, 2022, 2023, 2024, 2025].map((y) => `${TOTAL_SK} ${yearAttr(y, 'v')}`),
    );
    expect(cells.filter((c) => c.startsWith(`${monthSk(2016, 12)} `))).toHaveLength(29);
    expect(cells.filter((c) => c.startsWith(`${monthSk(2026, 12)} `))).toEqual([
      `${monthSk(2026, 12)} ${dayAttr(335, 'v')}`,
      `${monthSk(2026, 12)} ${dayAttr(336, 'v')}`,
    ]);
    expect(cells).toContain(`${monthSk(2026, 11)} ${monthAttr(11, 'v')}`);
    expect(cellsOf('2024-01-01', '2024-12-31')).toEqual([`${TOTAL_SK} ${yearAttr(2024, 'v')}`]);
    expect(cellsOf('2024-02-01', '2024-02-29')).toEqual([`${monthSk(2024, 2)} ${monthAttr(2, 'v')}`]);
    expect(cellsOf('2024-02-28', '2024-03-01')).toEqual([
      `${monthSk(2024, 2)} ${dayAttr(59, 'v')}`,
      `${monthSk(2024, 2)} ${dayAttr(60, 'v')}`,
      `${monthSk(2024, 3)} ${dayAttr(61, 'v')}`,
    ]);
  });

  it('with yearsFromMonths reads a whole year as its 12 month cells, never TOTAL (a visitor under a history limit)', () => {
    const months = (y: number) => Array.from({ length: 12 }, (_, i) => `${monthSk(y, i + 1)} ${monthAttr(i + 1, 'v')}`);
    const of = (from: string, to: string) => coverOf(explicitRange(from, to), true).map((c) => `${c.sk} ${c.attr('v')}`);
    expect(of('2024-01-01', '2024-12-31')).toEqual(months(2024));
    expect(of('2023-02-01', '2025-01-31')).toEqual([...months(2023).slice(1), ...months(2024), `${monthSk(2025, 1)} ${monthAttr(1, 'v')}`]);
    expect(of('2024-02-28', '2024-03-01')).toEqual(cellsOf('2024-02-28', '2024-03-01'));
  });

  it('sums to exactly the sum of the days, for any range (every count lands in its day, month, year and total cells)', () => {
    const base = toEpochDay(dateOf(2015, 1, 1));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4000 }),
        fc.integer({ min: 0, max: 3659 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 7700 }), fc.integer({ min: 1, max: 1000 })), { maxLength: 200 }),
        (start, len, counts) => {
          const cells = new Map<string, bigint>();
          const add = (sk: string, attr: string, v: bigint) => cells.set(`${sk} ${attr}`, (cells.get(`${sk} ${attr}`) ?? 0n) + v);
          for (const [day, v] of counts) {
            const d = fromEpochDay(base + day);
            add(monthSk(d.year, d.month), dayAttr(d.doy, 'v'), BigInt(v));
            add(monthSk(d.year, d.month), monthAttr(d.month, 'v'), BigInt(v));
            add(TOTAL_SK, yearAttr(d.year, 'v'), BigInt(v));
            add(TOTAL_SK, totalAttr('v'), BigInt(v));
          }
          const from = fromEpochDay(base + start);
          const to = addDays(from, len);
          let expected = 0n;
          for (const [day, v] of counts) if (base + day >= toEpochDay(from) && base + day <= toEpochDay(to)) expected += BigInt(v);
          const got = coverOf({ from, to }).reduce((sum, c) => sum + (cells.get(`${c.sk} ${c.attr('v')}`) ?? 0n), 0n);
          expect(got).toBe(expected);
          // At most TOTAL and 12 month items at each end.
          expect(new Set(coverOf({ from, to }).map((c) => c.sk)).size).toBeLessThanOrEqual(25);
          // From month items only: the same sum, one item per month of the range.
          const byMonths = coverOf({ from, to }, true);
          expect(byMonths.reduce((sum, c) => sum + (cells.get(`${c.sk} ${c.attr('v')}`) ?? 0n), 0n)).toBe(expected);
          expect(byMonths.some((c) => c.sk === TOTAL_SK)).toBe(false);
          expect(new Set(byMonths.map((c) => c.sk)).size).toBe((to.year - from.year) * 12 + to.month - from.month + 1);
        },
      ),
      { numRuns: 300 },
    );
  });
});
