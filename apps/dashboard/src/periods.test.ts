import { describe, expect, it } from 'vitest';
import {
  addDays,
  addMonths,
  checkPicked,
  comparisonWindow,
  dashboardWindows,
  daysBetween,
  isDay,
  lastDayOf,
  listDays,
  listMonths,
  periodStartMs,
  presetWindow,
} from './periods';

describe('calendar arithmetic on store days', () => {
  it('adds days across months, years and leap days', () => {
    expect(addDays('2024-02-28', 1)).toBe('2024-02-29');
    expect(addDays('2023-02-28', 1)).toBe('2023-03-01');
    expect(addDays('2024-01-01', -1)).toBe('2023-12-31');
    expect(addDays('2024-03-01', -29)).toBe('2024-02-01');
  });

  it('adds months and finds month ends', () => {
    expect(addMonths('2024-01', -1)).toBe('2023-12');
    expect(addMonths('2024-11', 2)).toBe('2025-01');
    expect(addMonths('2024-03', -23)).toBe('2022-04');
    expect(lastDayOf('2024-02')).toBe('2024-02-29');
    expect(lastDayOf('2023-02')).toBe('2023-02-28');
    expect(lastDayOf('2023-12')).toBe('2023-12-31');
  });

  it('validates days and reads periods as UTC midnights', () => {
    expect(isDay('2024-02-29')).toBe(true);
    expect(isDay('2023-02-29')).toBe(false);
    expect(isDay('2023-5-3')).toBe(false);
    expect(periodStartMs('2023-05-03')).toBe(Date.UTC(2023, 4, 3));
    expect(periodStartMs('2023-05')).toBe(Date.UTC(2023, 4, 1));
    expect(() => periodStartMs('2023')).toThrow(RangeError);
  });

  it('lists days and months inclusively', () => {
    expect(listDays('2023-12-30', '2024-01-02')).toEqual(['2023-12-30', '2023-12-31', '2024-01-01', '2024-01-02']);
    expect(listMonths('2023-11', '2024-02')).toEqual(['2023-11', '2023-12', '2024-01', '2024-02']);
    expect(daysBetween('2024-01-01', '2024-12-31')).toBe(366);
  });
});

describe('dashboardWindows', () => {
  it('gives the last 30 days and the 30 before, the last 12 months and the 12 before (as one request)', () => {
    // The days chart's default range (presetWindow) and the period it is compared with (comparisonWindow).
    const days = presetWindow('last30d', '2024-03-01');
    const previousDays = comparisonWindow(days);
    expect(days).toEqual({ from: '2024-02-01', to: '2024-03-01' });
    expect(previousDays).toEqual({ from: '2024-01-02', to: '2024-01-31' });
    expect(listDays(days.from, days.to)).toHaveLength(30);
    expect(listDays(previousDays.from, previousDays.to)).toHaveLength(30);
    const w = dashboardWindows('2024-03-01');
    expect(w.months).toEqual({ from: '2023-04', to: '2024-03' });
    expect(w.previousMonths).toEqual({ from: '2022-04', to: '2023-03' });
    expect(w.monthsRequest).toEqual({ from: '2022-04-01', to: '2024-03-01' });
  });
});

describe('the range picker', () => {
  it('turns presets into days of the store, and compares a range with as many days just before it', () => {
    expect(presetWindow('last7d', '2024-03-01')).toEqual({ from: '2024-02-24', to: '2024-03-01' });
    expect(presetWindow('thisMonth', '2024-03-15')).toEqual({ from: '2024-03-01', to: '2024-03-15' });
    expect(presetWindow('lastMonth', '2024-03-15')).toEqual({ from: '2024-02-01', to: '2024-02-29' });
    expect(presetWindow('thisYear', '2024-03-15')).toEqual({ from: '2024-01-01', to: '2024-03-15' });
    expect(comparisonWindow({ from: '2024-03-01', to: '2024-03-31' })).toEqual({ from: '2024-01-30', to: '2024-02-29' });
    expect(comparisonWindow({ from: '2024-03-15', to: '2024-03-15' })).toEqual({ from: '2024-03-14', to: '2024-03-14' });
  });

  it('checks a picked range', () => {
    expect(checkPicked('2024-01-01', '2024-03-15', '2024-03-15')).toEqual({ from: '2024-01-01', to: '2024-03-15' });
    expect(checkPicked('2024-03-16', '2024-03-15', '2024-03-20')).toBe('The start is after the end.');
    expect(checkPicked('2024-03-01', '2024-03-21', '2024-03-20')).toBe('The range ends after today.');
    expect(checkPicked('', '2024-03-21', '2024-03-20')).toBe('Pick a start and an end day.');
    expect(checkPicked('2010-01-01', '2024-03-20', '2024-03-20')).toMatch(/^At most 3660 days/);
  });
});
