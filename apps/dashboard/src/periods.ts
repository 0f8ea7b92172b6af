// Calendar arithmetic on the API's period strings. A day `2023-05-03` or a month `2023-05` is already a date in
// the store's time zone (the API bins counts there), so these functions never look at the browser's time zone:
// they compute on UTC midnights, where every day has 24 hours.

/** `YYYY-MM-DD`, a day in the store's time zone. */
export type Day = string;
/** `YYYY-MM`, a month in the store's time zone. */
export type Month = string;

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
const MONTH = /^(\d{4})-(\d{2})$/;
const MS_PER_DAY = 86_400_000;

/** A real day `YYYY-MM-DD` (not `2023-02-30`). */
export function isDay(s: string): boolean {
  return DAY.test(s) && addDays(s, 0) === s;
}

/** Milliseconds of the UTC midnight that starts `day` (or the first day of a month `YYYY-MM`). */
export function periodStartMs(period: Day | Month): number {
  const d = DAY.exec(period);
  if (d) return Date.UTC(Number(d[1]), Number(d[2]) - 1, Number(d[3]));
  const m = MONTH.exec(period);
  if (m) return Date.UTC(Number(m[1]), Number(m[2]) - 1, 1);
  throw new RangeError(`not a day (YYYY-MM-DD) or month (YYYY-MM): ${JSON.stringify(period)}`);
}

function dayOfMs(ms: number): Day {
  return new Date(ms).toISOString().slice(0, 10);
}

export function addDays(day: Day, n: number): Day {
  return dayOfMs(periodStartMs(day) + n * MS_PER_DAY);
}

export function monthOf(day: Day): Month {
  return day.slice(0, 7);
}

export function addMonths(month: Month, n: number): Month {
  const start = new Date(periodStartMs(month));
  return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + n, 1)).toISOString().slice(0, 7);
}

function firstDayOf(month: Month): Day {
  return `${month}-01`;
}

export function lastDayOf(month: Month): Day {
  return addDays(firstDayOf(addMonths(month, 1)), -1);
}

/** Inclusive count of days from `from` to `to`. */
export function daysBetween(from: Day, to: Day): number {
  return Math.round((periodStartMs(to) - periodStartMs(from)) / MS_PER_DAY) + 1;
}

export interface DateWindow {
  from: Day;
  to: Day;
}

export const sameWindow = (a: DateWindow, b: DateWindow): boolean => a.from === b.from && a.to === b.to;

/**
 * The months chart's windows, given the store's `today` (the days chart shows a picked range: presetWindow and
 * comparisonWindow). Its data comes in one request covering the months and the ones before them, split in two by
 * `compare` (series.ts) — one request reads the same DynamoDB month rows two requests would, at half the requests.
 */
export interface DashboardWindows {
  /** The 12 months ending with this month, as months. */
  months: { from: Month; to: Month };
  /** The 12 months before them. */
  previousMonths: { from: Month; to: Month };
  /** Both, as one request (granularity month; the API answers whole months). */
  monthsRequest: DateWindow;
}

const DAYS_SHOWN = 30;
const MONTHS_SHOWN = 12;

export function dashboardWindows(today: Day): DashboardWindows {
  const thisMonth = monthOf(today);
  const months = { from: addMonths(thisMonth, -(MONTHS_SHOWN - 1)), to: thisMonth };
  const previousMonths = { from: addMonths(thisMonth, -(2 * MONTHS_SHOWN - 1)), to: addMonths(thisMonth, -MONTHS_SHOWN) };
  return { months, previousMonths, monthsRequest: { from: firstDayOf(previousMonths.from), to: today } };
}

/** Every period from `from` to `to`, inclusive, `next` after another. */
function listPeriods(from: string, to: string, next: (period: string) => string): string[] {
  const out: string[] = [];
  for (let p = from; p <= to; p = next(p)) out.push(p);
  return out;
}

/** Every day from `from` to `to`, inclusive. */
export const listDays = (from: Day, to: Day): Day[] => listPeriods(from, to, (d) => addDays(d, 1));
/** Every month from `from` to `to`, inclusive. */
export const listMonths = (from: Month, to: Month): Month[] => listPeriods(from, to, (m) => addMonths(m, 1));

/** The ranges the picker offers; `custom` is any from/to. */
export const RANGE_PRESETS = [
  { id: 'last7d', label: 'Last 7 days' },
  { id: 'last30d', label: 'Last 30 days' },
  { id: 'last90d', label: 'Last 90 days' },
  { id: 'thisMonth', label: 'This month' },
  { id: 'lastMonth', label: 'Last month' },
  { id: 'thisYear', label: 'This year' },
  { id: 'custom', label: 'Custom' },
] as const;
export type RangePreset = (typeof RANGE_PRESETS)[number]['id'];

/** The days of a preset, given the store's today (today included where the preset reaches it). */
export function presetWindow(preset: Exclude<RangePreset, 'custom'>, today: Day): DateWindow {
  switch (preset) {
    case 'last7d':
      return { from: addDays(today, -6), to: today };
    case 'last30d':
      return { from: addDays(today, -(DAYS_SHOWN - 1)), to: today };
    case 'last90d':
      return { from: addDays(today, -89), to: today };
    case 'thisMonth':
      return { from: firstDayOf(monthOf(today)), to: today };
    case 'lastMonth': {
      const m = addMonths(monthOf(today), -1);
      return { from: firstDayOf(m), to: lastDayOf(m) };
    }
    case 'thisYear':
      return { from: `${today.slice(0, 4)}-01-01`, to: today };
  }
}

/** The period a range is compared with: as many days, ending the day before it starts. */
export function comparisonWindow(range: DateWindow): DateWindow {
  const n = daysBetween(range.from, range.to);
  return { from: addDays(range.from, -n), to: addDays(range.from, -1) };
}

/** Longest range the picker takes, as the query API (10 years). */
const MAX_PICKED_DAYS = 3_660;

/**
 * A range typed into the picker, checked: real days, `from` not after `to`, nothing after today, at most
 * MAX_PICKED_DAYS. Returns the window or what is wrong, in words.
 */
export function checkPicked(from: string, to: string, today: Day): DateWindow | string {
  if (!isDay(from) || !isDay(to)) return 'Pick a start and an end day.';
  if (from > to) return 'The start is after the end.';
  if (to > today) return 'The range ends after today.';
  if (daysBetween(from, to) > MAX_PICKED_DAYS) return `At most ${MAX_PICKED_DAYS} days (10 years).`;
  return { from, to };
}
