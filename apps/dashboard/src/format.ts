// Pure formatting: numbers as the API sends them (counts as numbers, scaled sums such as Revenue as exact decimal
// strings), calendar periods of the store, and the age of an answer. No DOM, no browser time zone.
import { periodStartMs, type Day, type Month } from './periods';

/** A metric value as the API sends it: a count (number) or an exact decimal string (`'19.99'`). */
export type MetricValue = number | string;

/** `undefined` = the runtime's default locale (the browser's language). */
export type Locale = string | undefined;

/** A plain decimal: sign, whole digits, fraction digits. */
export const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

function numberParts(locale: Locale): { decimal: string; minus: string } {
  const parts = new Intl.NumberFormat(locale).formatToParts(-1.5);
  return {
    decimal: parts.find((p) => p.type === 'decimal')?.value ?? '.',
    minus: parts.find((p) => p.type === 'minusSign')?.value ?? '-',
  };
}

/** A whole count with the locale's grouping: `12345` → `12,345`. */
export function formatCount(n: number, locale?: Locale): string {
  return new Intl.NumberFormat(locale, { maximumFractionDigits: 0 }).format(n);
}

/**
 * An exact decimal string with the locale's grouping and decimal sign, at least `scale` fraction digits, without
 * going through a float (`'1234567.5'`, 2 → `1,234,567.50`). A string that is not a plain decimal is returned as is.
 */
export function formatDecimal(value: string, scale: number, locale?: Locale): string {
  const m = DECIMAL.exec(value.trim());
  if (!m) return value;
  const { decimal, minus } = numberParts(locale);
  const whole = BigInt(m[2]!).toLocaleString(locale);
  const fraction = (m[3] ?? '').padEnd(scale, '0');
  const negative = m[1] === '-' && /[1-9]/.test(m[2]! + (m[3] ?? ''));
  return `${negative ? minus : ''}${whole}${fraction ? decimal + fraction : ''}`;
}

/**
 * An amount of money in `currency` (ISO 4217), with the locale's symbol, grouping and decimal sign, exactly: the
 * decimal string goes to Intl.NumberFormat as a string (which formats it digit for digit, never through a float).
 * Shows at least the currency's usual decimals (2 for EUR, 0 for JPY) and every decimal the value has.
 */
export function formatMoney(value: MetricValue, scale: number, currency: string, locale?: Locale): string {
  const text = typeof value === 'string' ? value.trim() : value.toFixed(scale);
  if (!DECIMAL.exec(text)) return text;
  const usual = new Intl.NumberFormat(locale, { style: 'currency', currency }).resolvedOptions().minimumFractionDigits ?? 2;
  const own = DECIMAL.exec(text)![3]?.replace(/0+$/, '').length ?? 0;
  const digits = Math.max(usual, own);
  const money = new Intl.NumberFormat(locale, { style: 'currency', currency, minimumFractionDigits: usual, maximumFractionDigits: digits });
  return money.format(text as unknown as number);
}

/** A metric value for display: money in the store's currency when given, decimals at the metric's scale, counts grouped. */
export function formatMetric(value: MetricValue, scale: number, locale?: Locale, currency?: string): string {
  if (currency !== undefined) return formatMoney(value, scale, currency, locale);
  if (typeof value === 'string') return formatDecimal(value, scale, locale);
  if (scale > 0) return formatDecimal(value.toFixed(scale), scale, locale);
  return formatCount(value, locale);
}

/** For charts and comparisons only (never for the numbers shown as text). */
export function toNumber(value: MetricValue | undefined): number {
  if (value === undefined) return 0;
  const n = typeof value === 'number' ? value : Number(value);
  return Number.isFinite(n) ? n : 0;
}

/** Axis ticks: `1.2K`, `3M`; money in `currency` when given: `€1.2K`. */
export function formatCompact(n: number, locale?: Locale, currency?: string): string {
  const money: Intl.NumberFormatOptions = currency ? { style: 'currency', currency } : {};
  return new Intl.NumberFormat(locale, { ...money, notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

export interface Change {
  /** `+23%`, `−5%`, `±0%`, `new` (nothing before), `–` (nothing either time). */
  text: string;
  direction: 'up' | 'down' | 'flat' | 'new' | 'none';
}

/** The change from `previous` to `current`, rounded to a whole percent. */
export function percentChange(current: number, previous: number, locale?: Locale): Change {
  if (previous === 0) return current === 0 ? { text: '–', direction: 'none' } : { text: 'new', direction: 'new' };
  const pct = Math.round(((current - previous) / Math.abs(previous)) * 100);
  if (pct === 0) return { text: '±0%', direction: 'flat' };
  const abs = formatCount(Math.abs(pct), locale);
  return pct > 0 ? { text: `+${abs}%`, direction: 'up' } : { text: `\u2212${abs}%`, direction: 'down' };
}

/** How old an answer is, for "updated … ago": `just now`, `2 s ago`, `3 min ago`, `2 h ago`. */
export function formatAge(ageMs: number): string {
  const s = Math.max(0, Math.floor(ageMs / 1000));
  if (s < 1) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

// Calendar periods are already the store's days and months; format them at UTC so the browser's zone never shifts them.
const periodFormat =
  (options: Intl.DateTimeFormatOptions) =>
  (period: Day | Month, locale?: Locale): string =>
    new Intl.DateTimeFormat(locale, { ...options, timeZone: 'UTC' }).format(periodStartMs(period));

/** `Dec 1 – 7, 2026`, `Mar 1, 2019 – Dec 7, 2026`: the locale's own range, with each year that differs. */
export const formatDayRange = (from: Day, to: Day, locale?: Locale): string =>
  new Intl.DateTimeFormat(locale, { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' }).formatRange(
    periodStartMs(from),
    periodStartMs(to),
  );
/** `Wed, May 3` — for axes and lists, where the weekday matters to a shop. */
export const formatDayWithWeekday = periodFormat({ weekday: 'short', month: 'short', day: 'numeric' });
/** `Wednesday, May 3, 2023`. */
export const formatDayLong = periodFormat({ weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
/** `May 2023`. */
export const formatMonth = periodFormat({ month: 'short', year: 'numeric' });

/** A wall-clock time in the store's time zone: `14:03:05` / `2:03:05 PM`. */
export function formatTimeInZone(ms: number, timeZone: string, locale?: Locale): string {
  return new Intl.DateTimeFormat(locale, { timeZone, hour: 'numeric', minute: '2-digit', second: '2-digit' }).format(ms);
}

/** `Europe/Paris (GMT+2)`; just the name when the runtime cannot give the offset. */
export function formatZone(timeZone: string, ms: number, locale?: Locale): string {
  try {
    const offset = new Intl.DateTimeFormat(locale, { timeZone, timeZoneName: 'shortOffset' })
      .formatToParts(ms)
      .find((p) => p.type === 'timeZoneName')?.value;
    return offset && offset !== timeZone ? `${timeZone} (${offset})` : timeZone;
  } catch {
    return timeZone;
  }
}
