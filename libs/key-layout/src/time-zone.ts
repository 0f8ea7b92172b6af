import { dateOf, type LocalDate } from './calendar';

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      hourCycle: 'h23',
      era: 'short',
    });
    formatters.set(tz, f);
  }
  return f;
}

/** True when `tz` is an IANA time zone name this runtime knows. */
export function isValidTimeZone(tz: string): boolean {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64) return false;
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

export interface LocalTime extends LocalDate {
  readonly hour: number;
  readonly minute: number;
}

/** Wall-clock date and time of an instant in a time zone (uncached; use localDate on hot paths). */
export function localTime(tsMs: number, tz: string): LocalTime {
  const p = Object.fromEntries(
    formatter(tz)
      .formatToParts(tsMs)
      .map((part) => [part.type, part.value]),
  );
  const year = Number(p['year']);
  const bc = p['era'] === 'BC' || p['era'] === 'B';
  return { ...dateOf(bc ? 1 - year : year, Number(p['month']), Number(p['day'])), hour: Number(p['hour']), minute: Number(p['minute']) };
}

// Every UTC offset in use since 1972 is a multiple of 15 minutes, and zone transitions happen on such
// boundaries, so the local date is constant within an aligned 15-minute slot of UTC. Caching per slot makes
// binning a map lookup on the apply path.
const SLOT_MS = 15 * 60 * 1000;
const CACHE_LIMIT = 200_000;
/** Before 1972 some zones used offsets such as -00:44:30 (Liberia), so no slot cache there. */
const CACHE_FROM_MS = Date.UTC(1972, 5, 1);
const dateCache = new Map<string, LocalDate>();
const dayKeyCache = new Map<string, string>();

/** `localDate` formatted as a day key (`YYYY-DDD`), cached per zone and 15-minute slot (the apply hot path). */
export function localDayKey(tsMs: number, tz: string): string {
  if (tsMs < CACHE_FROM_MS) return formatDayKey(localDate(tsMs, tz));
  const key = `${tz}\u0000${Math.floor(tsMs / SLOT_MS)}`;
  let k = dayKeyCache.get(key);
  if (k === undefined) {
    k = formatDayKey(localDate(tsMs, tz));
    if (dayKeyCache.size >= CACHE_LIMIT) dayKeyCache.clear();
    dayKeyCache.set(key, k);
  }
  return k;
}

const formatDayKey = (d: LocalDate) => `${String(d.year).padStart(4, '0')}-${String(d.doy).padStart(3, '0')}`;

/** The store-local date (year, month, day, day-of-year) of an instant. */
export function localDate(tsMs: number, tz: string): LocalDate {
  if (tsMs < CACHE_FROM_MS) {
    const t = localTime(tsMs, tz);
    return dateOf(t.year, t.month, t.day);
  }
  const slot = Math.floor(tsMs / SLOT_MS);
  const key = `${tz}\u0000${slot}`;
  let d = dateCache.get(key);
  if (!d) {
    const t = localTime(tsMs, tz);
    d = dateOf(t.year, t.month, t.day);
    if (dateCache.size >= CACHE_LIMIT) dateCache.clear();
    dateCache.set(key, d);
  }
  return d;
}
