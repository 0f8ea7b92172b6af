import { describe, expect, it } from 'vitest';
import { chartCsv, toCsv } from './csv';
import type { ShownMetric } from './metrics';
import { compare } from './series';

const metric = (name: string, counted = true): ShownMetric => ({ name, label: name, noun: name, scale: 0, counted, additive: true });

describe('CSV export', () => {
  it('quotes what needs quoting and ends lines with CRLF', () => {
    expect(
      toCsv([
        ['a', 'b,c'],
        ['say "hi"', 'x\ny'],
      ]),
    ).toBe('a,"b,c"\r\n"say ""hi""","x\ny"\r\n');
  });

  it('writes each period with the one it is compared with, values exactly as the API answered', () => {
    const points = [
      { period: '2026-03-02', values: { ViewCount: 3, Revenue: '19.99' } },
      { period: '2026-02-28', values: { ViewCount: 1, Revenue: '0.01' } },
    ];
    const c = compare(points, ['2026-03-01', '2026-03-02'], ['2026-02-27', '2026-02-28'], ['ViewCount', 'Revenue']);
    expect(chartCsv(c, [metric('UniqueVisitors', false), metric('ViewCount'), metric('Revenue')], 'day')).toBe(
      [
        'day,ViewCount,Revenue,compared_day,compared_ViewCount,compared_Revenue',
        '2026-03-01,0,0,2026-02-27,0,0',
        '2026-03-02,3,19.99,2026-02-28,1,0.01',
        '',
      ].join('\r\n'),
    );
  });

  it('says beside a distinct count which of its values are estimates', () => {
    const points = [
      { period: '2026-03-02', values: { ViewCount: 400, UniqueVisitors: 351 }, estimated: ['UniqueVisitors'] },
      { period: '2026-02-28', values: { ViewCount: 9, UniqueVisitors: 7 } },
    ];
    const c = compare(points, ['2026-03-01', '2026-03-02'], ['2026-02-27', '2026-02-28'], ['ViewCount', 'UniqueVisitors']);
    const uv = { ...metric('UniqueVisitors'), additive: false };
    expect(chartCsv(c, [metric('ViewCount'), uv], 'day')).toBe(
      [
        'day,ViewCount,UniqueVisitors,UniqueVisitors_estimate,compared_day,compared_ViewCount,compared_UniqueVisitors,compared_UniqueVisitors_estimate',
        '2026-03-01,0,0,false,2026-02-27,0,0,false',
        '2026-03-02,400,351,true,2026-02-28,9,7,false',
        '',
      ].join('\r\n'),
    );
  });
});
