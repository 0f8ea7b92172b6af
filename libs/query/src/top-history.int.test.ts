import { BucketStore, readTopHistory, recordTopHistory, type TopHistory } from '@tally/buckets';
import { compareDates, dayKey, formatDate, localDate, parseDate, redisKeys, type LocalDate } from '@tally/key-layout';
import { rollup } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { explicitRange, readTop, type QueryDeps } from './index';
import { queryRefusal, rankedRules as rules, useQueryFixture } from './test-fixtures';
import { oldestTopDay } from './top';

const fixture = useQueryFixture(rules);

const DAY_MS = 86_400_000;
const at = (iso: string) => Date.parse(iso);
const view = (ts: number, product: string) => ({ type: 'view', ts, dims: { product, visitor: 'V1' } });

/** A store's query deps whose top lists reach back `days` (the query API's TOP_HISTORY_DAYS) and `history` allows. */
async function setup(prefix: string, days: number, history?: () => Promise<TopHistory>): Promise<QueryDeps> {
  const key = redisKeys(prefix).topHistory;
  return { ...(await fixture.deps(prefix)), topReach: { days, history: history ?? (() => readTopHistory(fixture.redis, key)) } };
}
/** An aggregator's BucketStore keeping the rankings `days` days. */
const aggregator = (prefix: string, days: number) =>
  new BucketStore({ redis: fixture.redis, rules, prefix, rankTtlSeconds: days * 86_400 });
const top = (deps: QueryDeps, from: string, to: string, now: number) =>
  readTop(deps, { store: 'S', entity: 'product', metric: 'ViewCount', range: explicitRange(from, to), limit: 10, timeZone: 'UTC', now });
/** The message of the refusal of `from` a promise rejects with (a test fails if it resolves). */
const refusal = async (p: Promise<unknown>) => {
  const err = await queryRefusal(p);
  expect(err.field).toBe('from');
  return err.message;
};

describe('top lists after TOP_HISTORY_DAYS changed', () => {
  it('raised from 100 to 200 days: no day a 100-day retention let expire is read; older days become readable as they accumulate', async () => {
    const deps = await setup('raise', 200);
    const key = redisKeys('raise').topHistory;
    // Before the raise the aggregators kept the rankings 100 days: 2024-01-20 was counted, and its ranking expired
    // 100 days later (deleted here, as its TTL would).
    await recordTopHistory(fixture.redis, key, 100, at('2024-01-01T00:00:00Z'));
    await aggregator('raise', 100).apply('S', 'a', rollup(rules, 'S', 'UTC', [view(at('2024-01-20T10:00:00Z'), 'P1')]), {
      now: at('2024-01-20T10:00:00Z'),
      dedupeTtlSeconds: 60,
    });
    const [expired] = await fixture.redis.keys(`raise:{S}:k:${dayKey(parseDate('2024-01-20')!)}:*`);
    expect(await fixture.redis.ttl(expired!)).toBeGreaterThan(100 * 86_400 - 60);
    await fixture.redis.del(expired!);
    // Raised to 200 days on 2024-04-25 (the aggregators record it as they start), then P2 counted on 2024-04-27.
    const raisedAt = at('2024-04-25T12:00:00Z');
    await recordTopHistory(fixture.redis, key, 200, raisedAt);
    await aggregator('raise', 200).apply('S', 'b', rollup(rules, 'S', 'UTC', [view(at('2024-04-27T10:00:00Z'), 'P2')]), {
      now: at('2024-04-27T10:00:00Z'),
      dedupeTtlSeconds: 60,
    });

    // 10 days later 2024-01-20 is within 200 days, but its list would be empty (the view of P1 is gone): refused.
    const now = raisedAt + 10 * DAY_MS;
    const blind = await setup('raise', 200, async () => new Map([[200, 0]]));
    expect((await top(blind, '2024-01-20', '2024-01-20', now)).items).toEqual([]);
    expect(await refusal(top(deps, '2024-01-20', '2024-01-20', now))).toBe(
      'top lists reach back 98 days, to 2024-01-28 (the aggregators kept the daily rankings of earlier days less than 200 days: ' +
        'their TOP_HISTORY_DAYS is or was lower, or was raised lately), not to 2024-01-20',
    );
    expect((await top(deps, '2024-01-28', '2024-02-28', now)).items).toEqual([]);

    // 150 days after the raise, the days counted since a day after it are read (148 days back), not the day before.
    const later = raisedAt + 150 * DAY_MS;
    expect((await top(deps, '2024-04-27', '2024-05-27', later)).items).toEqual([{ id: 'P2', units: 1n }]);
    expect(await refusal(top(deps, '2024-04-26', '2024-05-27', later))).toMatch(
      /^top lists reach back 148 days, to 2024-04-27 \(the aggregators kept .* less than 200 days: .*\), not to 2024-04-26$/,
    );
    // 250 days after it, the 200 days are whole: the usual 198 days back.
    const whole = raisedAt + 250 * DAY_MS;
    const oldest = formatDate(localDate(whole - 198 * DAY_MS, 'UTC'));
    expect(await refusal(top(deps, '2024-04-27', '2024-05-27', whole))).toBe(
      `top lists reach back 198 days, to ${oldest} (the daily rankings are kept 200 days), not to 2024-04-27`,
    );
  });

  it('cut to 40 days on the aggregators but not on the query API: 38 days back, not 98', async () => {
    const deps = await setup('cut', 100);
    const key = redisKeys('cut').topHistory;
    await recordTopHistory(fixture.redis, key, 100, at('2024-01-01T00:00:00Z'));
    const cutAt = at('2024-03-01T12:00:00Z');
    await recordTopHistory(fixture.redis, key, 40, cutAt);
    const now = cutAt + DAY_MS; // 2024-03-02
    expect(await refusal(top(deps, '2024-01-10', '2024-01-31', now))).toMatch(
      /^top lists reach back 38 days, to 2024-01-24 \(the aggregators kept .* less than 100 days: .*\), not to 2024-01-10$/,
    );
    expect((await top(deps, '2024-01-24', '2024-02-20', now)).items).toEqual([]);
  });
});

describe('oldestTopDay', () => {
  /** Where `day` starts in `tz` (day boundaries fall on quarter hours of UTC). */
  const dayStart = (day: LocalDate, tz: string) => {
    for (let t = Date.UTC(day.year, day.month - 1, day.day) - 15 * 3_600_000; ; t += 900_000)
      if (compareDates(localDate(t, tz), day) === 0) return t;
  };

  it('reads a day kept longer only since a time once its first apply (23 h of clock skew early) came an hour after it', () => {
    const zones = [
      'UTC',
      'America/New_York',
      'Europe/London',
      'Australia/Lord_Howe',
      'Pacific/Chatham',
      'Pacific/Kiritimati',
      'Pacific/Pago_Pago',
    ];
    for (const tz of zones) {
      // Every 13 hours over two months spanning the March DST changes.
      for (let since = at('2024-02-20T00:00:00Z'); since < at('2024-04-20T00:00:00Z'); since += 13 * 3_600_000) {
        const { oldest, limited } = oldestTopDay(new Map([[200, since]]), 200, since + 10 * DAY_MS, tz);
        expect(limited).toBe(true);
        expect(dayStart(oldest, tz) - 23 * 3_600_000, `${tz} ${new Date(since).toISOString()}`).toBeGreaterThanOrEqual(since + 3_600_000);
      }
    }
  });

  it('takes the earliest day any retention kept whole, and never more than the query API’s own days', () => {
    const now = at('2024-06-01T12:00:00Z');
    const day = (d: LocalDate) => formatDate(d);
    // 100 days since ever: 98 days back.
    expect(day(oldestTopDay(new Map([[100, 0]]), 100, now, 'UTC').oldest)).toBe('2024-02-24');
    // The query API's own 60 days cap it (not `limited`: its own value).
    expect(oldestTopDay(new Map([[100, 0]]), 60, now, 'UTC')).toEqual({ oldest: parseDate('2024-04-04'), limited: false });
    // 300 days since 2024-05-01 and 100 since ever: the 100 days reach further until the 300 days' days are older.
    const raised = new Map([
      [100, 0],
      [300, at('2024-05-01T00:00:00Z')],
    ]);
    expect(day(oldestTopDay(raised, 300, now, 'UTC').oldest)).toBe('2024-02-24');
    const later = at('2024-09-01T12:00:00Z');
    expect(day(oldestTopDay(raised, 300, later, 'UTC').oldest)).toBe('2024-05-03');
  });
});
