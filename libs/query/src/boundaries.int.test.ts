import { rollup } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { explicitRange, readSeries, readTotals, resolveMetrics } from './index';
import { flushStore, rankedRules as rules, useQueryFixture } from './test-fixtures';

/**
 * Day, month, year and total bins across a year end and Feb 28/29/Mar 1 of a leap year in the zone furthest east
 * (+14:00, where the local day is the UTC day before until 10:00Z), with a row's counts in every stage at once:
 * DynamoDB, the outbox, a sealed bucket and the open bucket. Every time is fixed (the buckets' clock is injected).
 */
const fixture = useQueryFixture(rules);
const TZ = 'Pacific/Kiritimati';
const HOUR_MS = 3_600_000;
const view = (ts: number, product: string, visitor: string) => ({ type: 'view', ts, dims: { product, visitor } });
const sum = (ns: number[]) => ns.reduce((a, b) => a + b, 0);

describe('bins across year, month and leap-day boundaries', () => {
  it('day, month, year, total, all time and readTotals agree exactly with counts in every stage', async () => {
    const deps = await fixture.deps('bd');
    const stamps = ['2027-12-31T23:30:00', '2028-01-01T00:30:00', '2028-02-28T23:30:00', '2028-02-29T12:00:00', '2028-03-01T00:10:00'].map(
      (local) => Date.parse(`${local}+14:00`),
    );
    let clock = Date.parse('2028-03-01T00:00:00Z');
    let batch = 0;
    /** Batch k: k + i + 1 views of P1 at the i-th instant. */
    const put = async (k: number) => {
      for (const [i, ts] of stamps.entries()) {
        const events = Array.from({ length: k + i + 1 }, (_, j) => view(ts, 'P1', `V${(j + i) % 7}`));
        await deps.buckets.registerStore('S');
        await deps.buckets.apply('S', `b${batch++}`, rollup(rules, 'S', TZ, events), { now: clock, dedupeTtlSeconds: 3600 });
      }
    };
    await put(1); // written to DynamoDB
    clock += HOUR_MS;
    await flushStore(deps, 'S', clock);
    await put(2); // folded into the outbox, not written
    clock += HOUR_MS;
    await deps.buckets.seal('S', { now: clock, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: clock });
    await put(3); // sealed, not folded
    clock += HOUR_MS;
    await deps.buckets.seal('S', { now: clock, minAgeMs: 0 });
    await put(4); // in the open bucket
    const ks = [1, 2, 3, 4];
    const expected = BigInt(sum(stamps.map((_, i) => sum(ks.map((k) => k + i + 1)))));

    const metrics = resolveMetrics(rules, ['ViewCount']);
    const range = explicitRange('2027-01-01', '2028-12-31');
    const q = (granularity: 'day' | 'month' | 'year' | 'total', r: typeof range | 'all' = range) =>
      readSeries(deps, { store: 'S', pk: 'S#product#P1', metrics, range: r, granularity });
    const [day, month, year, total, allYear, allTotal] = await Promise.all([
      q('day'),
      q('month'),
      q('year'),
      q('total'),
      q('year', 'all'),
      q('total', 'all'),
    ]);
    for (const r of [day, month, year, total, allYear, allTotal]) expect(r.totals['ViewCount']).toBe(expected);
    const totals = await readTotals(deps, { store: 'S', pks: ['S#product#P1'], metrics, range });
    expect(totals.rows[0]!.values['ViewCount']).toBe(expected);
    // Local days: Dec 31 and Jan 1 in two years; Feb 28, the leap day and Mar 1 apart.
    const views = (points: typeof day.points) => Object.fromEntries(points.map((p) => [p.period, p.values['ViewCount']]));
    const atInstant = (i: number) => BigInt(sum(ks.map((k) => k + i + 1)));
    expect(views(day.points.filter((p) => p.values['ViewCount'] !== 0n))).toEqual({
      '2027-12-31': atInstant(0),
      '2028-01-01': atInstant(1),
      '2028-02-28': atInstant(2),
      '2028-02-29': atInstant(3),
      '2028-03-01': atInstant(4),
    });
    expect(views(allYear.points)).toEqual({ '2027': atInstant(0), '2028': expected - atInstant(0) });
    // Feb 2028 alone (the leap day's month) as a total and as a month.
    const feb = explicitRange('2028-02-01', '2028-02-29');
    const febTotal = await readSeries(deps, { store: 'S', pk: 'S#product#P1', metrics, range: feb, granularity: 'total' });
    expect(febTotal.totals['ViewCount']).toBe(atInstant(2) + atInstant(3));
    expect(views(month.points)['2028-02']).toBe(atInstant(2) + atInstant(3));
  });
});
