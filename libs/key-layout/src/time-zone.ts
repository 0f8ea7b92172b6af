import { dateOf, type LocalDate } from './calendar';

/**
 * Formatters of the zones events are binned in (the stores' zones), by the name given. Bounded: a name is cached only
 * when a date is computed in it (isValidTimeZone and canonicalTimeZone never cache), and the map is emptied past
 * FORMATTER_LIMIT, so names that differ only in case (`eUrOpE/pArIs`) cannot grow it for ever.
 */
const formatters = new Map<string, Intl.DateTimeFormat>();
const FORMATTER_LIMIT = 2_000;

const newFormatter = (tz: string) =>
  new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    hourCycle: 'h23',
    era: 'short',
  });

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = newFormatter(tz);
    if (formatters.size >= FORMATTER_LIMIT) formatters.clear();
    formatters.set(tz, f);
  }
  return f;
}

/** The runtime's own spelling of each of its canonical zone names (and UTC), by its lower case. */
let spellings: Map<string, string> | undefined;

/**
 * The name to keep for a time zone this runtime knows, or undefined when it knows none of that name (what
 * isValidTimeZone refuses): a canonical name in any case in its own spelling (`europe/paris` → `Europe/Paris`,
 * `utc` → `UTC`); a UTC offset as the runtime writes it (`+0530` and `+05` → `+05:30` and `+05:00`, `−05:00` with a
 * Unicode minus → `-05:00`); any other name the runtime accepts (an alias such as `Asia/Kolkata`, which ICU would turn
 * into `Asia/Calcutta`) as given. Caches nothing of the name.
 */
export function canonicalTimeZone(tz: string): string | undefined {
  if (!isValidTimeZone(tz)) return undefined;
  spellings ??= new Map([...Intl.supportedValuesOf('timeZone'), 'UTC'].map((name) => [name.toLowerCase(), name]));
  const offset = resolvedOffset(newFormatter(tz));
  return spellings.get(tz.toLowerCase()) ?? offset ?? tz;
}

/** The zone's UTC offset as the runtime writes it (`+05:30`, `-05:37`), or undefined for a named zone. */
function resolvedOffset(f: Intl.DateTimeFormat): string | undefined {
  const id = f.resolvedOptions().timeZone;
  return /^[+-]\d{2}:\d{2}$/.test(id) ? id : undefined;
}

/**
 * True when `tz` is an IANA time zone name this runtime knows (in any case), or a UTC offset it takes as a zone
 * (`+05:30`, `-0300`, `+05`). Caches nothing of the name. A new store setting takes only what timeZoneProblem takes.
 */
export function isValidTimeZone(tz: string): boolean {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64) return false;
  if (formatters.has(tz)) return true;
  try {
    newFormatter(tz);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a time zone is refused as a store's setting, as the end of a sentence `time zone "…" <this>`, or undefined:
 * a zone isValidTimeZone refuses, or a UTC offset that is not a whole number of quarter hours (`+05:37`), which no
 * zone has had since 1979 and whose local days the 15-minute slot caches (binsBySlot) would cut across.
 */
export function timeZoneProblem(tz: string): string | undefined {
  if (!isValidTimeZone(tz)) return 'is not an IANA time zone name such as Europe/Paris or UTC';
  if (!binsBySlot(tz))
    return 'is a UTC offset that is not a whole number of quarter hours, as every zone in use is (+05:30, +05:45, -03:00)';
  return undefined;
}

/**
 * True when an instant's local date in `tz` is the same throughout its aligned 15-minute slot of UTC from
 * SLOT_CACHE_FROM_MS on: every IANA zone, and offsets of whole quarter hours. Not for an offset such as `+05:37` (a
 * store made before such offsets were refused): its days are computed event by event, uncached.
 */
export function binsBySlot(tz: string): boolean {
  // The offset as the runtime reads it: it also takes `−05:37` (a Unicode minus), `-0537` and `+05`.
  const minutes = resolvedOffset(formatters.get(tz) ?? newFormatter(tz))?.slice(-2);
  return minutes === undefined || Number(minutes) % 15 === 0;
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

// From SLOT_CACHE_FROM_MS on, every zone's UTC offset is a whole number of quarter hours, and every transition that
// changes the local date falls on a quarter hour of UTC, so the local date is constant within an aligned 15-minute
// slot of UTC. Caching per slot makes binning a map lookup on the apply path.
const SLOT_MS = 15 * 60 * 1000;
const CACHE_LIMIT = 200_000;
/**
 * From this instant on, the local date is cached per zone and 15-minute slot of UTC (here, and in the rollup of a
 * batch). Before it, each instant is binned on its own: offsets such as -10:40 (Pacific/Kiritimati until 1979), and
 * clocks turned back at 00:01 local time to 23:01 the day before, in the middle of a slot (America/St_Johns and
 * Goose_Bay 1987 to 2010-11-07, Moncton 1993-2006). Every later transition off the quarter hour keeps the local date
 * (clocks turned forward at 00:01: Asia/Gaza and Hebron 2011-04-01, St_Johns and Goose_Bay 2011-03-13;
 * Antarctica/Casey from 00:01 to 03:01 in October 2020-22). Found by a scan of every zone's transitions to 2041 in the
 * runtime's tz data (ICU, tz 2026e) and in the system's (zdump).
 */
export const SLOT_CACHE_FROM_MS = Date.UTC(2011, 0, 1);
const dateCache = new Map<string, LocalDate>();
const dayKeyCache = new Map<string, string>();

/** `localDate` formatted as a day key (`YYYY-DDD`), cached per zone and 15-minute slot (the apply hot path). */
export function localDayKey(tsMs: number, tz: string): string {
  if (tsMs < SLOT_CACHE_FROM_MS) return formatDayKey(localDate(tsMs, tz));
  const key = `${tz}\u0000${Math.floor(tsMs / SLOT_MS)}`;
  let k = dayKeyCache.get(key);
  if (k === undefined) {
    k = formatDayKey(localDate(tsMs, tz));
    if (!binsBySlot(tz)) return k;
    if (dayKeyCache.size >= CACHE_LIMIT) dayKeyCache.clear();
    dayKeyCache.set(key, k);
  }
  return k;
}

const formatDayKey = (d: LocalDate) => `${String(d.year).padStart(4, '0')}-${String(d.doy).padStart(3, '0')}`;

/** The store-local date (year, month, day, day-of-year) of an instant. */
export function localDate(tsMs: number, tz: string): LocalDate {
  if (tsMs < SLOT_CACHE_FROM_MS) {
    const t = localTime(tsMs, tz);
    return dateOf(t.year, t.month, t.day);
  }
  const slot = Math.floor(tsMs / SLOT_MS);
  const key = `${tz}\u0000${slot}`;
  let d = dateCache.get(key);
  if (!d) {
    const t = localTime(tsMs, tz);
    d = dateOf(t.year, t.month, t.day);
    if (!binsBySlot(tz)) return d;
    if (dateCache.size >= CACHE_LIMIT) dateCache.clear();
    dateCache.set(key, d);
  }
  return d;
}
