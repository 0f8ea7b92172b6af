/** Civil-calendar arithmetic (proleptic Gregorian), independent of time zones. */

export interface LocalDate {
  readonly year: number;
  /** 1-12 */
  readonly month: number;
  /** 1-31 */
  readonly day: number;
  /** Day of year, 1-366. */
  readonly doy: number;
}

const CUMULATIVE = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

export function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

export function daysInMonth(year: number, month: number): number {
  if (month === 2) return isLeapYear(year) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

export function daysInYear(year: number): number {
  return isLeapYear(year) ? 366 : 365;
}

export function dayOfYear(year: number, month: number, day: number): number {
  return CUMULATIVE[month - 1]! + day + (month > 2 && isLeapYear(year) ? 1 : 0);
}

export function dateOf(year: number, month: number, day: number): LocalDate {
  return { year, month, day, doy: dayOfYear(year, month, day) };
}

/** The date of day-of-year `doy` (1-366) in `year`. */
export function fromDayOfYear(year: number, doy: number): LocalDate {
  if (!Number.isInteger(doy) || doy < 1 || doy > daysInYear(year)) {
    throw new RangeError(`day of year ${doy} does not exist in ${year}`);
  }
  let month = 12;
  while (dayOfYear(year, month, 1) > doy) month--;
  return { year, month, day: doy - dayOfYear(year, month, 1) + 1, doy };
}

/** Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil). */
export function toEpochDay(d: { year: number; month: number; day: number }): number {
  const y = d.month <= 2 ? d.year - 1 : d.year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const mp = (d.month + 9) % 12;
  const doy = Math.floor((153 * mp + 2) / 5) + d.day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

export function fromEpochDay(z0: number): LocalDate {
  const z = z0 + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doyMar = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doyMar + 2) / 153);
  const day = doyMar - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  return dateOf(year, month, day);
}

export function addDays(d: LocalDate, n: number): LocalDate {
  return fromEpochDay(toEpochDay(d) + n);
}

/** First day of the month `n` months after d's month. */
export function addMonths(d: { year: number; month: number }, n: number): LocalDate {
  const idx = d.year * 12 + (d.month - 1) + n;
  return dateOf(Math.floor(idx / 12), (((idx % 12) + 12) % 12) + 1, 1);
}

export function compareDates(a: LocalDate, b: LocalDate): number {
  return a.year - b.year || a.doy - b.doy;
}

/** `2023-05-03` */
export function formatDate(d: { year: number; month: number; day: number }): string {
  return `${String(d.year).padStart(4, '0')}-${String(d.month).padStart(2, '0')}-${String(d.day).padStart(2, '0')}`;
}

/** Parses `YYYY-MM-DD`; undefined when it is not a real date. */
export function parseDate(s: string): LocalDate | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  return dateOf(year, month, day);
}
