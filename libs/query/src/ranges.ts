import type { NamedRange, RangeName } from '@tally/contracts';
import {
  addDays,
  addMonths,
  compareDates,
  dateOf,
  daysInMonth,
  formatDate,
  localDate,
  parseDate,
  retentionStart,
  toEpochDay,
  type LocalDate,
} from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import { QueryError } from './errors';

export interface DateRange {
  from: LocalDate;
  to: LocalDate;
}

/** Every count ever: read from the TOTAL item, not from dates. */
const ALL_TIME = 'all';
/** What a query covers: dates (inclusive), or all time. */
export type QueryRange = DateRange | typeof ALL_TIME;

/** Longest range a query may cover. */
const MAX_RANGE_DAYS = 3_660;

/** A named range, in the store's time zone, ending today (inclusive on both ends). */
export function namedRange(name: NamedRange, tz: string, now: number): DateRange {
  const today = localDate(now, tz);
  switch (name) {
    case 'today':
      return { from: today, to: today };
    case 'yesterday': {
      const y = addDays(today, -1);
      return { from: y, to: y };
    }
    case 'last7d':
      return { from: addDays(today, -6), to: today };
    case 'last30d':
      return { from: addDays(today, -29), to: today };
    case 'last3m':
      return { from: addDays(sameDayMonthsAgo(today, 3), 1), to: today };
    case 'last12m':
      return { from: addDays(sameDayMonthsAgo(today, 12), 1), to: today };
    case 'thisMonth':
      return { from: dateOf(today.year, today.month, 1), to: today };
    case 'thisYear':
      return { from: dateOf(today.year, 1, 1), to: today };
  }
}

function sameDayMonthsAgo(d: LocalDate, months: number): LocalDate {
  const first = addMonths(d, -months);
  return dateOf(first.year, first.month, Math.min(d.day, daysInMonth(first.year, first.month)));
}

/** `{ from, to }` as `YYYY-MM-DD` strings, validated: real dates, from <= to, at most MAX_RANGE_DAYS. */
export function explicitRange(from: string, to: string): DateRange {
  const f = dateParam('from', from);
  const t = dateParam('to', to);
  if (compareDates(f, t) > 0) throw new QueryError('from', `from=${from} is after to=${to}`);
  if (toEpochDay(t) - toEpochDay(f) + 1 > MAX_RANGE_DAYS)
    throw new QueryError('to', `the range spans more than ${MAX_RANGE_DAYS} days (10 years)`);
  return { from: f, to: t };
}

/** A `YYYY-MM-DD` parameter as a date; a well-formed string naming no day (2026-02-30) is told apart from a malformed one. */
function dateParam(field: 'from' | 'to', value: string): LocalDate {
  const d = parseDate(value);
  if (d) return d;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (m && Number(m[2]) >= 1 && Number(m[2]) <= 12)
    throw new QueryError(field, `${value} is not a day: ${m[1]}-${m[2]} has ${daysInMonth(Number(m[1]), Number(m[2]))} days`);
  if (m) throw new QueryError(field, `${value} is not a day: there is no month ${m[2]}`);
  throw new QueryError(field, `must be a date YYYY-MM-DD, got ${JSON.stringify(value)}`);
}

export function daysOf(range: DateRange): LocalDate[] {
  const out: LocalDate[] = [];
  for (let d = range.from; compareDates(d, range.to) <= 0; d = addDays(d, 1)) out.push(d);
  return out;
}

export function monthsOf(range: DateRange): Array<{ year: number; month: number }> {
  const out: Array<{ year: number; month: number }> = [];
  for (let d = addMonths(range.from, 0); compareDates(d, range.to) <= 0; d = addMonths(d, 1)) out.push({ year: d.year, month: d.month });
  return out;
}

/** How a request gives its range: `range=<name>`, or `from` and `to` (YYYY-MM-DD). */
export interface RangeQuery {
  range?: RangeName | undefined;
  from?: string | undefined;
  to?: string | undefined;
}

/**
 * `range=<name>` or `from`+`to`, in the store's time zone → dates, or ALL_TIME for allTime. Unset → `fallback`.
 * QueryErrors name range, from or to (both given, one missing, from after to, beyond 10 years, not a date).
 */
export function resolveRange(
  q: RangeQuery,
  timeZone: string,
  now: number,
  fallback: RangeName,
): { range: QueryRange; name: RangeName | null } {
  const explicit = q.from !== undefined || q.to !== undefined;
  if (q.range !== undefined && explicit) throw new QueryError('range', 'give either range or from and to, not both');
  if (explicit) {
    if (q.from === undefined) throw new QueryError('from', 'from is required with to (both YYYY-MM-DD)');
    if (q.to === undefined) throw new QueryError('to', 'to is required with from (both YYYY-MM-DD)');
    return { range: explicitRange(q.from, q.to), name: null };
  }
  const name = q.range ?? fallback;
  return { range: name === 'allTime' ? ALL_TIME : namedRange(name, timeZone, now), name };
}

/** A store's visitor-history retention, as its tenant says (libs/tenants TenantInfo; a request's principal). */
export interface VisitorRetention {
  /** Months kept: this month and the N - 1 before; undefined = no limit. */
  historyMonths?: number | undefined;
  /** `YYYY-MM-DD`: no visitor count before this day is kept (a limit lifted had expired them); undefined = none. */
  historyTrimmedBefore?: string | undefined;
}

/**
 * The first day of a visitor's history that counts at `now`, in the store's zone: the limit's retentionStart, or the
 * day a lifted limit trimmed the history before, whichever is later; undefined when every day counts. From it on a
 * visitor's counts are read from month items only: the TOTAL item still holds the months TTL deleted before it.
 */
export function visitorHistoryStart(retention: VisitorRetention, tz: string, now: number): LocalDate | undefined {
  const { historyMonths, historyTrimmedBefore } = retention;
  const limit = historyMonths === undefined ? undefined : retentionStart(historyMonths, tz, now);
  const trimmed = historyTrimmedBefore === undefined ? undefined : parseDate(historyTrimmedBefore);
  if (!limit || !trimmed) return limit ?? trimmed;
  return compareDates(limit, trimmed) < 0 ? trimmed : limit;
}

/**
 * A visitor query's range cut at the store's visitor-history retention (visitorHistoryStart): all time becomes the
 * days kept up to today, a range reaching before them starts at the first kept day, and a range wholly before them
 * is refused (nothing of it is kept), even while DynamoDB's TTL has not yet deleted the items.
 */
export function clampToRetention(range: QueryRange, retention: VisitorRetention, tz: string, now: number): QueryRange {
  const start = visitorHistoryStart(retention, tz, now);
  if (!start) return range;
  if (range === ALL_TIME) {
    const today = localDate(now, tz);
    return { from: start, to: compareDates(today, start) < 0 ? start : today };
  }
  if (compareDates(range.to, start) < 0) {
    const why =
      retention.historyMonths !== undefined && formatDate(start) !== retention.historyTrimmedBefore
        ? `this store keeps ${retention.historyMonths} months`
        : 'it had expired under an earlier limit of this store';
    throw new QueryError('from', `visitor history before ${formatDate(start)} is not kept (${why})`);
  }
  return compareDates(range.from, start) < 0 ? { from: start, to: range.to } : range;
}

/**
 * A visitor row's range under its store's retention (clampToRetention), and whether its years and all time are sums
 * of month items (readSeries and readTotals `yearsFromMonths`): whenever there is a first day kept, as TOTAL's year
 * and all-time cells still hold the months before it.
 */
export function retainedVisitorRange(
  range: QueryRange,
  retention: VisitorRetention,
  tz: string,
  now: number,
): { range: QueryRange; yearsFromMonths: boolean } {
  const clamped = clampToRetention(range, retention, tz, now);
  return { range: clamped, yearsFromMonths: visitorHistoryStart(retention, tz, now) !== undefined };
}

/**
 * The range a query reads of `entity`'s rows under its store's retention: for a visitor entity, one whose key includes
 * the visitor's dimension (`rules.visitorKeyedEntities`: the rows whose items a store's historyMonths expires, those
 * keyed by the visitor alone, which an erasure erases, and those keyed by it and another dimension),
 * retainedVisitorRange; for any other entity the range asked, its years from TOTAL (nothing of it expires).
 */
export function retainedRange(
  rules: Pick<CompiledRules, 'visitorKeyedEntities'>,
  entity: string,
  range: QueryRange,
  retention: VisitorRetention,
  tz: string,
  now: number,
): { range: QueryRange; yearsFromMonths: boolean } {
  return rules.visitorKeyedEntities.has(entity) ? retainedVisitorRange(range, retention, tz, now) : { range, yearsFromMonths: false };
}
