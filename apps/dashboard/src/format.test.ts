import { describe, expect, it } from 'vitest';
import {
  formatAge,
  formatMoney,
  formatCount,
  formatDayLong,
  formatDayRange,
  formatDayWithWeekday,
  formatDecimal,
  formatMetric,
  formatMonth,
  formatTimeInZone,
  formatZone,
  percentChange,
  toNumber,
} from './format';

describe('numbers', () => {
  it('groups counts', () => {
    expect(formatCount(0, 'en-US')).toBe('0');
    expect(formatCount(1234567, 'en-US')).toBe('1,234,567');
    expect(formatCount(1234567, 'de-DE')).toBe('1.234.567');
  });

  it('formats decimal strings exactly, at the metric scale, without a float', () => {
    expect(formatDecimal('19.99', 2, 'en-US')).toBe('19.99');
    expect(formatDecimal('1234567.5', 2, 'en-US')).toBe('1,234,567.50');
    expect(formatDecimal('0', 2, 'en-US')).toBe('0.00');
    expect(formatDecimal('-0.50', 2, 'en-US')).toBe('-0.50');
    expect(formatDecimal('-0.00', 2, 'en-US')).toBe('0.00');
    expect(formatDecimal('1234.5', 2, 'de-DE')).toBe('1.234,50');
    // Beyond 2^53 minor units a float would round; the string does not.
    expect(formatDecimal('92233720368547758.07', 2, 'en-US')).toBe('92,233,720,368,547,758.07');
    expect(formatDecimal('not a number', 2, 'en-US')).toBe('not a number');
  });

  it('picks the format from the value and the scale', () => {
    expect(formatMetric(12345, 0, 'en-US')).toBe('12,345');
    expect(formatMetric('39.98', 2, 'en-US')).toBe('39.98');
    expect(formatMetric(0, 2, 'en-US')).toBe('0.00');
    expect(formatMetric(1999.5, 2, 'en-US')).toBe('1,999.50');
    expect(toNumber('39.98')).toBe(39.98);
    expect(toNumber(undefined)).toBe(0);
    expect(toNumber('x')).toBe(0);
  });

  it('says how a period changed, and says nothing made up when there was nothing before', () => {
    expect(percentChange(123, 100, 'en-US')).toEqual({ text: '+23%', direction: 'up' });
    expect(percentChange(95, 100, 'en-US')).toEqual({ text: '\u22125%', direction: 'down' });
    expect(percentChange(100, 100, 'en-US')).toEqual({ text: '±0%', direction: 'flat' });
    expect(percentChange(5, 0, 'en-US')).toEqual({ text: 'new', direction: 'new' });
    expect(percentChange(0, 0, 'en-US')).toEqual({ text: '–', direction: 'none' });
  });
});

describe('ages and periods', () => {
  it('tells the age of an answer', () => {
    expect(formatAge(-50)).toBe('just now');
    expect(formatAge(900)).toBe('just now');
    expect(formatAge(2_400)).toBe('2 s ago');
    expect(formatAge(59_999)).toBe('59 s ago');
    expect(formatAge(61_000)).toBe('1 min ago');
    expect(formatAge(2 * 3_600_000 + 5)).toBe('2 h ago');
  });

  it('formats store days and months as calendar dates, whatever the runtime time zone', () => {
    // The locale's own range (thin spaces around the dash in en-US), with the year of each end when they differ.
    expect(formatDayRange('2026-12-01', '2026-12-07', 'en-US')).toBe('Dec 1\u2009–\u20097, 2026');
    expect(formatDayRange('2026-11-08', '2026-12-07', 'en-US')).toBe('Nov 8\u2009–\u2009Dec 7, 2026');
    expect(formatDayRange('2019-03-01', '2026-12-07', 'en-US')).toBe('Mar 1, 2019\u2009–\u2009Dec 7, 2026');
    expect(formatDayRange('2011-05-23', '2019-02-28', 'en-US')).toBe('May 23, 2011\u2009–\u2009Feb 28, 2019');
    expect(formatDayRange('2026-11-08', '2026-12-07', 'de-DE')).toBe('8. Nov.\u2009–\u20097. Dez. 2026');
    expect(formatDayRange('2026-12-07', '2026-12-07', 'en-GB')).toBe('7 Dec 2026');
    expect(formatDayWithWeekday('2023-05-03', 'en-US')).toBe('Wed, May 3');
    expect(formatDayLong('2023-12-31', 'en-US')).toBe('Sunday, December 31, 2023');
    expect(formatMonth('2023-05', 'en-US')).toBe('May 2023');
  });

  it('formats instants in the store time zone', () => {
    const ms = Date.UTC(2023, 4, 3, 22, 30, 5);
    expect(formatTimeInZone(ms, 'Asia/Tokyo', 'en-GB')).toBe('7:30:05');
    expect(formatTimeInZone(ms, 'America/New_York', 'en-US')).toBe('6:30:05 PM');
    expect(formatZone('Europe/Paris', Date.UTC(2023, 0, 15), 'en-US')).toBe('Europe/Paris (GMT+1)');
    expect(formatZone('UTC', ms, 'en-US')).toMatch(/^UTC/);
    expect(formatZone('Not/AZone', ms, 'en-US')).toBe('Not/AZone');
  });
});

describe('money in the store currency', () => {
  it('formats exact decimal strings with the currency, never through a float', () => {
    expect(formatMoney('19.99', 2, 'EUR', 'en-US')).toBe('€19.99');
    expect(formatMoney('50', 2, 'EUR', 'de-DE')).toBe('50,00\u00a0€');
    expect(formatMoney('12345678901234567890.12', 2, 'USD', 'en-US')).toBe('$12,345,678,901,234,567,890.12');
    // Yen have no minor unit: none shown, unless the value has some.
    expect(formatMoney('1000', 2, 'JPY', 'en-US')).toBe('¥1,000');
    expect(formatMoney('1000.5', 2, 'JPY', 'en-US')).toBe('¥1,000.5');
    expect(formatMetric('39.98', 2, 'en-US', 'GBP')).toBe('£39.98');
    expect(formatMetric('39.98', 2, 'en-US')).toBe('39.98');
  });
});
