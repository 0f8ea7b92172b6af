import { RANK_TTL_DAYS } from '@tally/buckets';
import { addDays, compareDates, dayKey, formatDate, localDate, parseDate, type LocalDate } from '@tally/key-layout';
import { rollup, validateEvents } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { explicitRange, namedRange, readTop, type QueryDeps, type QueryError } from './index';
import { queryRefusal, rankedRules as rules, useQueryFixture } from './test-fixtures';

const fixture = useQueryFixture(rules);

const DAY_MS = 86_400_000;
const view = (ts: number, product: string, visitor: string) => ({ type: 'view', ts, dims: { product, visitor } });

describe('top lists over the rankings kept', () => {
  it("refuses a range starting before the days whose rankings are kept whole, counted in the store's time zone", async () => {
    const deps = await fixture.deps('age');
    // The query clock: 2024-03-16 02:00 UTC, 22:00 on 2024-03-15 in New York; the counts were applied just now.
    const now = Date.parse('2024-03-16T02:00:00Z');
    const tz = 'America/New_York';
    const back = RANK_TTL_DAYS - 2; // a day's ranking lives RANK_TTL_DAYS days after its last count, less a day's margin
    const today = localDate(now, tz);
    const oldest = addDays(today, -back);
    expect(formatDate(today)).toBe('2024-03-15');
    // One view on the oldest day kept, one the day before, one 150 days ago (21:00 or 22:00 in New York).
    const ago = (days: number) => now - days * DAY_MS;
    await deps.buckets.apply(
      'S',
      'a',
      rollup(rules, 'S', tz, [view(ago(back), 'P1', 'V1'), view(ago(back + 1), 'P2', 'V1'), view(ago(150), 'P3', 'V1')]),
      { now, dedupeTtlSeconds: 60 },
    );
    expect(formatDate(localDate(ago(back), tz))).toBe(formatDate(oldest));
    const top = (from: string, to: string, timeZone = tz) =>
      readTop(deps, { store: 'S', entity: 'product', metric: 'ViewCount', range: explicitRange(from, to), limit: 10, timeZone, now });

    // The oldest day kept is read.
    const first = formatDate(oldest);
    expect((await top(first, formatDate(addDays(oldest, 30)))).items).toEqual([{ id: 'P1', units: 1n }]);
    // A day earlier is refused, on `from`, though its ranking is still there: it may expire while read.
    const before = await queryRefusal(top(formatDate(addDays(oldest, -1)), formatDate(addDays(oldest, 30))));
    expect(before.field).toBe('from');
    expect(before.message).toBe(
      `top lists reach back ${back} days, to ${first} (the daily rankings are kept ${RANK_TTL_DAYS} days), not to ${formatDate(addDays(oldest, -1))}`,
    );
    // 150 to 120 days ago: refused, not answered from rankings that expired (items: []).
    const old = await queryRefusal(top(formatDate(addDays(today, -150)), formatDate(addDays(today, -120))));
    expect(old.field).toBe('from');
    // Today is the store's: in UTC it is already 2024-03-16, and the oldest day kept a day later.
    expect((await queryRefusal(top(first, formatDate(addDays(oldest, 30)), 'UTC'))).message).toMatch(
      new RegExp(`to ${formatDate(addDays(oldest, 1))} .* not to ${first}$`),
    );
    // The length refusals come first, as before.
    expect((await queryRefusal(top('2023-01-01', '2023-06-30'))).field).toBe('range');
    const allTime = readTop(deps, { store: 'S', entity: 'product', metric: 'ViewCount', range: 'all', limit: 10, timeZone: tz, now });
    expect((await queryRefusal(allTime)).field).toBe('range');
    // Named ranges (at most 92 days) are never refused for their age.
    const last3m = namedRange('last3m', tz, now);
    const r = await readTop(deps, { store: 'S', entity: 'product', metric: 'ViewCount', range: last3m, limit: 10, timeZone: tz, now });
    expect(r.range).toEqual(last3m);
  });
});

describe('late events and the rankings kept', () => {
  /** Where `day` starts in `tz` (day boundaries fall on quarter hours of UTC). */
  const dayStart = (day: LocalDate, tz: string) => {
    for (let t = Date.UTC(day.year, day.month - 1, day.day) - 15 * 3_600_000; ; t += 900_000)
      if (compareDates(localDate(t, tz), day) === 0) return t;
  };
  /** CLOCK_SKEW_SECONDS' default: an event of a day is counted from this long before the day starts. */
  const SKEW_MS = 300_000;
  const topOf = (deps: QueryDeps, store: string, day: LocalDate, tz: string, now: number) =>
    readTop(deps, { store, entity: 'product', metric: 'ViewCount', range: { from: day, to: day }, limit: 10, timeZone: tz, now });

  it("re-creates an expired day's ranking with the late event's delta only, on a day top lists no longer read", async () => {
    const deps = await fixture.deps('late');
    const tz = 'America/New_York';
    const day = parseDate('2024-03-01')!;
    const start = dayStart(day, tz);
    // The day's counts, applied as early as the clock skew lets them in: its rankings live RANK_TTL_DAYS days from then.
    const events = [view(start, 'P1', 'V1'), view(start, 'P1', 'V2'), view(start, 'P2', 'V1')];
    await deps.buckets.apply('L', 'a', rollup(rules, 'L', tz, events), { now: start - SKEW_MS, dedupeTtlSeconds: 60 });
    const rankings = await fixture.redis.keys(`late:{L}:k:${dayKey(day)}:*`);
    expect(rankings.length).toBeGreaterThan(0);
    for (const k of rankings) expect(await fixture.redis.ttl(k)).toBeGreaterThan(RANK_TTL_DAYS * 86_400 - 60);
    expect((await topOf(deps, 'L', day, tz, start)).items).toEqual([
      { id: 'P1', units: 2n },
      { id: 'P2', units: 1n },
    ]);

    // RANK_TTL_DAYS days later the rankings may be gone (deleted here, as their TTL would), and a late event of the day
    // (LATENESS_HORIZON_DAYS above RANK_TTL_DAYS) re-creates them holding its own delta only.
    const gone = start - SKEW_MS + RANK_TTL_DAYS * DAY_MS;
    await fixture.redis.del(...rankings);
    await deps.buckets.apply('L', 'b', rollup(rules, 'L', tz, [view(start + 60_000, 'P3', 'V3')]), { now: gone, dedupeTtlSeconds: 60 });
    for (const k of await fixture.redis.keys(`late:{L}:k:${dayKey(day)}:*`)) expect(await fixture.redis.zrange(k, 0, -1)).toEqual(['P3']);
    // No top list reads that day any more: from then on a range with it is refused.
    for (const now of [gone, gone + DAY_MS, gone + 30 * DAY_MS])
      expect((await queryRefusal(topOf(deps, 'L', day, tz, now))).field).toBe('from');
  });

  it('no day is read by a top list once its ranking can be gone, in any time zone and across DST changes', async () => {
    const deps = await fixture.deps('zones');
    const zones = [
      'UTC',
      'America/New_York',
      'Europe/London',
      'Australia/Lord_Howe',
      'Pacific/Chatham',
      'Asia/Kathmandu',
      'Pacific/Kiritimati',
    ];
    for (const tz of zones) {
      for (let day = parseDate('2024-01-01')!; day.year === 2024; day = addDays(day, 1)) {
        // The earliest moment the day's ranking may be gone, and so re-created by a late event.
        const gone = dayStart(day, tz) - SKEW_MS + RANK_TTL_DAYS * DAY_MS;
        const err = await topOf(deps, 'Z', day, tz, gone).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect({ tz, day: formatDate(day), field: (err as QueryError | undefined)?.field }).toEqual({
          tz,
          day: formatDate(day),
          field: 'from',
        });
      }
    }
  });
});

describe('ties', () => {
  it('lists equal values by id from the first: P01..P25 one view each, limit 10 is P01..P10 and limit 5 its prefix', async () => {
    const deps = await fixture.deps('ties');
    const now = Date.now();
    const tz = 'UTC';
    const pad = (i: number) => `P${String(i).padStart(2, '0')}`;
    // Yesterday and today: a tie split over days ranks as one.
    const events = Array.from({ length: 25 }, (_, i) => view(now - (i % 2) * DAY_MS, pad(i + 1), 'V1'));
    events.push(view(now, 'Q', 'V1'), view(now - DAY_MS, 'Q', 'V2'));
    await deps.buckets.apply('T', 'a', rollup(rules, 'T', tz, events), { now, dedupeTtlSeconds: 60 });
    const range = namedRange('last7d', tz, now);
    const top = async (limit: number) =>
      (await readTop(deps, { store: 'T', entity: 'product', metric: 'ViewCount', range, limit, timeZone: tz, now })).items.map((x) => [
        x.id,
        Number(x.units),
      ]);
    const all = [['Q', 2], ...Array.from({ length: 25 }, (_, i) => [pad(i + 1), 1])];
    expect(await top(10)).toEqual(all.slice(0, 10));
    expect(await top(5)).toEqual(all.slice(0, 5));
    for (const limit of [1, 2, 13, 26, 27, 100]) expect(await top(limit)).toEqual(all.slice(0, limit));
  });
});

describe('values past 2^53 units', () => {
  it('orders by exact values where the scores are equal doubles: P3 (2^53 + 1) before P1 and P2 (2^53) at every limit', async () => {
    const deps = await fixture.deps('big');
    const now = Date.now();
    const tz = 'UTC';
    const item = (product: string, value: string) => ({ type: 'order_item', ts: now - 1000, dims: { product }, value });
    // 2^53 units = 90071992547409.92: 90 events of the maximum value (1e12) and one of 71992547409.92; P3 one cent more.
    const base = (p: string) => [...Array.from({ length: 90 }, () => item(p, '1000000000000')), item(p, '71992547409.92')];
    const apply = async (store: string, batch: string, events: ReturnType<typeof item>[]) => {
      const valid = validateEvents(rules, events, { now, clockSkewMs: 300_000, latenessMs: DAY_MS });
      expect(valid.errors).toEqual([]);
      await deps.buckets.apply(store, batch, rollup(rules, store, tz, valid.events), { now, dedupeTtlSeconds: 60 });
    };
    const range = namedRange('last7d', tz, now);
    const top = async (store: string, limit: number) =>
      (await readTop(deps, { store, entity: 'product', metric: 'Revenue', range, limit, timeZone: tz, now })).items;
    await apply('B', 'a', [...base('P1'), ...base('P2'), ...base('P3'), item('P3', '0.01')]);
    const all = [
      { id: 'P3', units: 2n ** 53n + 1n },
      { id: 'P1', units: 2n ** 53n },
      { id: 'P2', units: 2n ** 53n },
    ];
    // The three score 2^53 in the rankings; each limit is a prefix of the next.
    for (const limit of [1, 2, 3, 10]) expect(await top('B', limit)).toEqual(all.slice(0, limit));

    // Scores can even swap: A's five later cents each round away (2^53 + 1 is no double), so A scores 2^53 under B and
    // C's 2^53 + 4 while its total is the highest. Limit 1 cuts at the second score, above A's.
    const cents = (p: string, n: number) => Array.from({ length: n }, () => item(p, '0.01'));
    await apply('C', 'a', [...base('A'), ...base('B'), ...cents('B', 4), ...base('C'), ...cents('C', 4)]);
    for (let i = 0; i < 5; i++) await apply('C', `c${i}`, cents('A', 1));
    const order = [
      { id: 'A', units: 2n ** 53n + 5n },
      { id: 'B', units: 2n ** 53n + 4n },
      { id: 'C', units: 2n ** 53n + 4n },
    ];
    for (const limit of [1, 2, 3]) expect(await top('C', limit)).toEqual(order.slice(0, limit));
  });
});
