import { dateOf, daysInMonth, dayAttr, monthAttr, monthSk, TOTAL_SK, yearAttr } from '@tally/key-layout';
import type { DateRange } from './ranges';

/** One counter cell of a cover: an item and, for a metric's attribute name, the attribute of the period. */
export interface Cell {
  sk: string;
  attr: (metricAttr: string) => string;
}

/**
 * The coarsest cells whose sum is a metric over `range`: every whole year from its year attribute on the TOTAL
 * item, every whole month of the other years from its month attribute on the month item, and the remaining days
 * from their day attributes. Every count is in all four of its cells (day, month, year, total), so the sum is the
 * sum of the days; a ten-year range reads at most 25 items per row (TOTAL and the 12 month items at each end)
 * instead of 121 month items. With `yearsFromMonths` (a visitor under a history limit or after one was lifted, whose
 * TOTAL item still holds the months TTL deleted) a whole year is its 12 month cells instead: only month items, one
 * per month of the range.
 */
export function coverOf(range: DateRange, yearsFromMonths = false): Cell[] {
  const cells: Cell[] = [];
  const { from, to } = range;
  for (let year = from.year; year <= to.year; year++) {
    const first = year === from.year ? from : dateOf(year, 1, 1);
    const last = year === to.year ? to : dateOf(year, 12, 31);
    if (!yearsFromMonths && first.month === 1 && first.day === 1 && last.month === 12 && last.day === 31) {
      cells.push({ sk: TOTAL_SK, attr: (a) => yearAttr(year, a) });
      continue;
    }
    for (let month = first.month; month <= last.month; month++) {
      const sk = monthSk(year, month);
      const firstDay = month === first.month ? first.day : 1;
      const lastDay = month === last.month ? last.day : daysInMonth(year, month);
      if (firstDay === 1 && lastDay === daysInMonth(year, month)) {
        cells.push({ sk, attr: (a) => monthAttr(month, a) });
        continue;
      }
      for (let day = firstDay; day <= lastDay; day++) {
        const { doy } = dateOf(year, month, day);
        cells.push({ sk, attr: (a) => dayAttr(doy, a) });
      }
    }
  }
  return cells;
}
