import { addMonths, toEpochDay, type LocalDate } from './calendar';
import { parseMonthSk, TOTAL_SK } from './names';
import { localDate } from './time-zone';

/**
 * Visitor-history retention (a store's `historyMonths`, docs/DESIGN.md "Privacy"): a store keeping N months keeps
 * the current month and the N - 1 before it, in its time zone. Queries cut at retentionStart whatever DynamoDB
 * still holds; the writer sets EXPIRES_ATTR (names.ts) so DynamoDB's TTL deletes the items later, at no write cost.
 */

/** The first day a store keeping `months` months of visitor history still counts, in its zone. */
export function retentionStart(months: number, timeZone: string, now: number): LocalDate {
  return addMonths(localDate(now, timeZone), -(months - 1));
}

const DAY_S = 86_400;
const DAY_MS = DAY_S * 1000;
/**
 * The oldest stamp retentionExpiry gives, in days before `now` (its UTC day). DynamoDB's TTL ignores an item whose
 * stamp is more than five years in the past (it is then kept for ever), so the stamp of a month of long ago (an event
 * accepted years late, LATENESS_HORIZON_DAYS; the restamp under a limit set on a store that kept its history for
 * ever) is a year ago instead: due, and deleted.
 */
export const OLDEST_STAMP_DAYS = 365;

/**
 * When an item of a visitor row may be deleted under a retention of `months`, in epoch seconds: a month item once
 * its month has left the window (the first day of month + months, as a UTC day, plus a day so that no time zone
 * sees it go before the query-side cut-off does), but never before OLDEST_STAMP_DAYS before `now`; TOTAL when the
 * current month's item does, the current month in the store's `timeZone` (it holds the all-time and yearly sums, so
 * it goes once the visitor has been away for the whole window; by the UTC month, a write in the first hours of a
 * month east of UTC set it a month early). Undefined for other items.
 */
export function retentionExpiry(sk: string, months: number, now: number, timeZone: string): number | undefined {
  const month = sk === TOTAL_SK ? localDate(now, timeZone) : parseMonthSk(sk);
  if (!month) return undefined;
  const oldest = (Math.floor(now / DAY_MS) - OLDEST_STAMP_DAYS) * DAY_S;
  return Math.max(oldest, (toEpochDay(addMonths(month, months)) + 1) * DAY_S);
}
