import { describe, expect, it } from 'vitest';
import type { SeriesPoint } from './api';
import { formatMetric } from './format';
import {
  chartData,
  compare,
  isEmpty,
  isEstimate,
  niceCeil,
  patchPoint,
  pickTicks,
  pointValue,
  sumValues,
  totalOf,
  withToday,
} from './series';

const pt = (period: string, v: number, r: string): SeriesPoint => ({ period, values: { ViewCount: v, Revenue: r } });

describe('compare', () => {
  const points = [pt('2024-01-01', 1, '1.00'), pt('2024-01-02', 2, '2.50'), pt('2024-01-04', 4, '0.05')];
  const c = compare(points, ['2024-01-03', '2024-01-04'], ['2024-01-01', '2024-01-02'], ['ViewCount', 'Revenue']);

  it('aligns the previous period point by point, a missing period counting as zero', () => {
    expect(c.current.map((p) => p.values['ViewCount'])).toEqual([0, 4]);
    expect(c.previous.map((p) => p.values['ViewCount'])).toEqual([1, 2]);
    expect(chartData(c, 'ViewCount')).toEqual([
      [Date.UTC(2024, 0, 3) / 1000, Date.UTC(2024, 0, 4) / 1000],
      [0, 4],
      [1, 2],
    ]);
    expect(chartData(c, 'Revenue')[2]).toEqual([1, 2.5]);
  });

  it('patches today from the live answer', () => {
    const live = withToday(c, pt('2024-01-04', 9, '3.10'));
    expect(live.current.map((p) => p.values['ViewCount'])).toEqual([0, 9]);
    expect(c.current[1]!.values['ViewCount']).toBe(4);
    expect(patchPoint(points, '2099-01-01', { ViewCount: 1 })).toEqual(points);
  });

  it("takes today's estimate marks from the live answer, keeping those of the values it does not replace", () => {
    const uv = (period: string, n: number, estimated?: string[]): SeriesPoint => ({
      period,
      values: { ViewCount: n, UniqueVisitors: n },
      ...(estimated && { estimated }),
    });
    const days = compare([uv('2024-01-03', 400, ['UniqueVisitors']), uv('2024-01-04', 200)], ['2024-01-03', '2024-01-04'], [], []);
    // Today passes 300 visitors: its live point is an estimate; yesterday's mark stays.
    const live = withToday(days, uv('2024-01-04', 310, ['UniqueVisitors']));
    expect(live.current.map((p) => isEstimate(p, 'UniqueVisitors'))).toEqual([true, true]);
    expect(live.current.map((p) => isEstimate(p, 'ViewCount'))).toEqual([false, false]);
    // A live answer of exact values takes the mark away from the values it replaces, not from the others.
    const marked = [uv('2024-01-04', 400, ['UniqueVisitors', 'Other'])];
    expect(patchPoint(marked, '2024-01-04', { UniqueVisitors: 5 })).toEqual([
      { period: '2024-01-04', values: { ViewCount: 400, UniqueVisitors: 5 }, estimated: ['Other'] },
    ]);
    expect(patchPoint(marked, '2024-01-04', { UniqueVisitors: 5, Other: 1 })[0]).not.toHaveProperty('estimated');
  });

  it("gives a chart's legend the API's exact values, not the plotted floats", () => {
    const big = compare(
      [pt('2024-01-03', 7, '95000000000019.04'), { period: '2024-01-01', values: { ViewCount: '9007199254740993' } }],
      ['2024-01-03'],
      ['2024-01-01'],
      ['ViewCount', 'Revenue'],
    );
    expect(formatMetric(pointValue(big, 'current', 0, 'Revenue')!, 2, 'en-US', 'USD')).toBe('$95,000,000,000,019.04');
    expect(formatMetric(pointValue(big, 'previous', 0, 'ViewCount')!, 0, 'en-US')).toBe('9,007,199,254,740,993');
    // A metric the point lacks is 0; past the ends there is no point.
    expect([pointValue(big, 'previous', 0, 'Revenue'), pointValue(big, 'current', 1, 'ViewCount')]).toEqual([0, null]);
  });

  it('knows an empty chart', () => {
    expect(isEmpty(c, 'ViewCount')).toBe(false);
    expect(isEmpty(compare([], ['2024-01-01'], ['2023-12-01'], ['ViewCount']), 'ViewCount')).toBe(true);
  });
});

describe('sumValues', () => {
  it('adds decimal strings exactly', () => {
    expect(sumValues(['0.10', '0.20'], 2)).toBe('0.30');
    expect(
      sumValues(
        Array.from({ length: 10 }, () => '0.10'),
        2,
      ),
    ).toBe('1.00');
    expect(sumValues(['19.99', '-20.00'], 2)).toBe('-0.01');
    expect(sumValues(['1.5', '2'], 2)).toBe('3.50');
    expect(sumValues(['92233720368547758.07', '0.01'], 2)).toBe('92233720368547758.08');
    expect(sumValues([], 2)).toBe(0);
  });

  it('adds counts past 2^53 exactly, as the decimal strings the API sends them as', () => {
    // 2^53 - 1 + 2: a float sum says 9007199254740992.
    expect(sumValues([Number.MAX_SAFE_INTEGER, 2], 0)).toBe('9007199254740993');
    expect(sumValues([Number.MAX_SAFE_INTEGER, 0], 0)).toBe(Number.MAX_SAFE_INTEGER);
    expect(sumValues(['9007199254740993', 1, undefined], 0)).toBe('9007199254740994');
    const days = [pt('a', 2 ** 52, '0'), pt('b', 2 ** 52, '0'), pt('c', 1, '0')];
    const total = totalOf(days, 'ViewCount', 0);
    expect(total).toBe('9007199254740993');
    expect(formatMetric(total, 0, 'en-US')).toBe('9,007,199,254,740,993');
  });

  it('adds counts as numbers', () => {
    expect(sumValues([1, 2, undefined, 3], 0)).toBe(6);
    expect(totalOf([pt('a', 3, '1.01'), pt('b', 4, '2.02')], 'ViewCount', 0)).toBe(7);
    expect(totalOf([pt('a', 3, '1.01'), pt('b', 4, '2.02')], 'Revenue', 2)).toBe('3.03');
  });
});

describe('axis helpers', () => {
  it('labels every n-th period, always the newest', () => {
    const xs = Array.from({ length: 30 }, (_, i) => i);
    expect(pickTicks(xs, 100)).toEqual(xs);
    const ten = pickTicks(xs, 10);
    expect(ten).toEqual([2, 5, 8, 11, 14, 17, 20, 23, 26, 29]);
    expect(pickTicks(xs, 0.5)).toEqual([29]);
    expect(pickTicks([], 5)).toEqual([]);
  });

  it('rounds an axis top to 1, 2, 2.5 or 5 times a power of ten', () => {
    expect(niceCeil(0)).toBe(1);
    expect(niceCeil(4)).toBe(5);
    expect(niceCeil(11)).toBe(20);
    expect(niceCeil(230)).toBe(250);
    expect(niceCeil(0.3)).toBeCloseTo(0.5);
    expect(niceCeil(1000)).toBe(1000);
  });
});
