import { afterEach, describe, expect, it } from 'vitest';
import { canonicalTimeZone, isValidTimeZone, localDate, localDayKey, localTime, timeZoneProblem } from './time-zone';

/** `n` spellings of `name` that differ only in the case of its letters. */
function caseVariants(name: string, n: number): string[] {
  const letters = [...name].flatMap((c, i) => (c.toLowerCase() !== c.toUpperCase() ? [i] : []));
  return Array.from({ length: n }, (_, v) => {
    const chars = [...name.toLowerCase()];
    letters.forEach((at, bit) => {
      if ((v >> bit) & 1) chars[at] = chars[at]!.toUpperCase();
    });
    return chars.join('');
  });
}

const RealDateTimeFormat = Intl.DateTimeFormat;
/** Counts the Intl.DateTimeFormat objects made from now on. */
function countFormatters() {
  const made = { count: 0 };
  Intl.DateTimeFormat = new Proxy(RealDateTimeFormat, {
    construct(target, args: ConstructorParameters<typeof Intl.DateTimeFormat>) {
      made.count++;
      return Reflect.construct(target, args);
    },
  });
  return made;
}
afterEach(() => {
  Intl.DateTimeFormat = RealDateTimeFormat;
});

describe('time zone names', () => {
  it('takes UTC offsets of whole quarter hours as store settings, refuses others saying why', () => {
    for (const tz of ['+05:30', '+0545', '-03', '+00:00', 'Asia/Kathmandu']) expect([tz, timeZoneProblem(tz)]).toEqual([tz, undefined]);
    // The runtime also reads `−` (U+2212) as a minus.
    for (const tz of ['+05:37', '-0317', '+00:01', '\u221205:37', '\u22120001'])
      expect([tz, timeZoneProblem(tz)]).toEqual([
        tz,
        expect.stringMatching(/^is a UTC offset that is not a whole number of quarter hours/),
      ]);
    expect(timeZoneProblem('Mars/Olympus')).toBe('is not an IANA time zone name such as Europe/Paris or UTC');
    // The runtime knows them: a store made before they were refused still reads and writes.
    expect(isValidTimeZone('+00:01')).toBe(true);
  });

  it('bins each instant in its own local day in an offset that cuts the 15-minute slots, whatever came first', () => {
    // +00:01: 23:50Z is 23:51 on Dec 31, 23:59:30Z is 00:00:30 on Jan 1, in one 15-minute slot of UTC.
    const before = Date.UTC(2025, 11, 31, 23, 50);
    const after = Date.UTC(2025, 11, 31, 23, 59, 30);
    for (const order of [
      [after, before],
      [before, after],
    ]) {
      const keys = new Map(order.map((t) => [t, localDayKey(t, '+00:01')]));
      expect([keys.get(before), keys.get(after)]).toEqual(['2025-365', '2026-001']);
      const days = new Map(order.map((t) => [t, localDate(t, '+00:01').year]));
      expect([days.get(before), days.get(after)]).toEqual([2025, 2026]);
      // -00:01 spelt with U+2212: 00:00:30Z is 23:59:30 on Dec 31, 00:05Z is 00:04 on Jan 1.
      const [late, early] = [Date.UTC(2026, 0, 1, 0, 0, 30), Date.UTC(2026, 0, 1, 0, 5)];
      const minus = new Map((order[0] === after ? [early, late] : [late, early]).map((t) => [t, localDayKey(t, '\u221200:01')]));
      expect([minus.get(late), minus.get(early)]).toEqual(['2025-365', '2026-001']);
    }
  });

  it('bins each instant in its own local day in a slot that a zone transition off the quarter hour cuts, whatever came first', () => {
    // Two instants of one 15-minute slot of UTC each: [zone, instant, its local day] × 2.
    const slots: Array<[string, string, string, string, string]> = [
      // Clocks turned back at 00:01 local time: 02:30Z is 00:00 on Nov 7 (NDT), 02:40Z 23:10 on Nov 6 (NST).
      ['America/St_Johns', '2010-11-07T02:30:00Z', '2010-311', '2010-11-07T02:40:00Z', '2010-310'],
      ['America/Goose_Bay', '2010-11-07T03:00:00Z', '2010-311', '2010-11-07T03:10:00Z', '2010-310'],
      // -10:40 until 10:40Z: 23:50 on Sep 30, then 00:44 on Oct 1 (-10:00).
      ['Pacific/Kiritimati', '1979-10-01T10:30:00Z', '1979-273', '1979-10-01T10:44:00Z', '1979-274'],
      // Transitions off the quarter hour that keep the date (the slot cache holds): 00:00 → 03:05 (00:01 → 03:01).
      ['Antarctica/Casey', '2020-10-03T16:00:00Z', '2020-278', '2020-10-03T16:05:00Z', '2020-278'],
      ['Antarctica/Casey', '2022-10-01T16:00:00Z', '2022-275', '2022-10-01T16:10:00Z', '2022-275'],
      ['Asia/Gaza', '2011-03-31T22:00:00Z', '2011-091', '2011-03-31T22:05:00Z', '2011-091'],
      ['America/St_Johns', '2011-03-13T03:30:00Z', '2011-072', '2011-03-13T03:35:00Z', '2011-072'],
    ];
    const key = (d: { year: number; doy: number }) => `${d.year}-${String(d.doy).padStart(3, '0')}`;
    for (const [tz, a, dayA, b, dayB] of slots) {
      const [ta, tb] = [Date.parse(a), Date.parse(b)];
      // localDayKey and localDate cache apart: one sees a first, the other b.
      expect([tz, localDayKey(ta, tz), localDayKey(tb, tz)]).toEqual([tz, dayA, dayB]);
      expect([tz, key(localDate(tb, tz)), key(localDate(ta, tz))]).toEqual([tz, dayB, dayA]);
    }
  });

  it('gives the name to keep: a canonical name in its own spelling whatever its case, an alias as given', () => {
    expect(canonicalTimeZone('eUrOpE/pArIs')).toBe('Europe/Paris');
    expect(canonicalTimeZone('europe/paris')).toBe('Europe/Paris');
    expect(canonicalTimeZone('Europe/Paris')).toBe('Europe/Paris');
    expect(canonicalTimeZone('utc')).toBe('UTC');
    // ICU's canonical id of Asia/Kolkata is Asia/Calcutta: an alias the runtime knows is kept as the operator wrote it.
    expect(canonicalTimeZone('Asia/Kolkata')).toBe('Asia/Kolkata');
    // An offset as the runtime writes it, so the one offset is one setting however it was typed.
    for (const tz of ['+0530', '+05:30']) expect(canonicalTimeZone(tz)).toBe('+05:30');
    expect(canonicalTimeZone('\u221205')).toBe('-05:00');
    expect(canonicalTimeZone('Mars/Olympus')).toBeUndefined();
    expect(canonicalTimeZone('')).toBeUndefined();
  });

  it('keeps no formatter per name validated, and a bounded number per name used: case variants cannot grow the cache for ever', () => {
    const variants = caseVariants('America/Los_Angeles', 2_100);
    expect(new Set(variants).size).toBe(2_100);
    const made = countFormatters();
    // Validating makes a formatter each time and keeps none.
    expect(isValidTimeZone(variants[0]!)).toBe(true);
    expect(isValidTimeZone(variants[0]!)).toBe(true);
    expect(made.count).toBe(2);
    // Binning in each variant caches its formatter, but not beyond the bound: the first one is gone by the end.
    for (const tz of variants) expect(localTime(Date.UTC(2024, 0, 1), tz).hour).toBe(16);
    made.count = 0;
    expect(localTime(Date.UTC(2024, 0, 1), variants[0]!).hour).toBe(16);
    expect(made.count).toBe(1);
  });
});
