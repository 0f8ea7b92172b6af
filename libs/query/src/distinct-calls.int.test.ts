import { addDays, dayKey, formatDate, parseDate } from '@tally/key-layout';
import { compileRules, defaultRules, rollupDistinct, type NormalizedEvent } from '@tally/schema';
import { describe, expect, it, vi } from 'vitest';
import { UNION_CALL_LIMITS } from './distinct';
import { explicitRange, readSeries, resolveMetrics } from './index';
import { useQueryFixture } from './test-fixtures';

const rules = compileRules(defaultRules);
const fixture = useQueryFixture(rules);

/** What one union call may carry: blobs, and their bytes unless it is one blob. */
const { blobs: MAX_BLOBS, bytes: MAX_BYTES } = UNION_CALL_LIMITS;

describe('a ten-year daily series of UniqueVisitors', () => {
  it('unions its 3,660 days and their total in bounded Redis calls, with the answer one call gave', async () => {
    const deps = await fixture.deps('u');
    const to = parseDate('2026-03-10')!;
    const from = addDays(to, -3_659);
    const days = Array.from({ length: 3_660 }, (_, i) => addDays(from, i));
    const noon = (i: number) => Date.parse(`${formatDate(days[i]!)}T12:00:00Z`);
    // A visitor a day of 400 who come back, on product P1 (exact sketches only); 350 more on three days, on P2: the
    // store's sketches of those days are HyperLogLogs.
    const events: NormalizedEvent[] = days.map((_, i) => ({ type: 'view', ts: noon(i), dims: { product: 'P1', visitor: `V${i % 400}` } }));
    for (const i of [100, 2_000, 3_650])
      for (let j = 0; j < 350; j++) events.push({ type: 'view', ts: noon(i), dims: { product: 'P2', visitor: `W${i}-${j}` } });
    await deps.buckets.sketches.add('S', rollupDistinct(rules, 'S', 'UTC', events));

    const uv = resolveMetrics(rules, ['UniqueVisitors']);
    const range = explicitRange(formatDate(from), formatDate(to));
    for (const pk of ['S', rules.pkOf('S', 'product', ['P1'])]) {
      // What one union call of every day and the total answers (the live sketches are all there is).
      const live = (await deps.buckets.sketches.read('S', [pk]))[0]!.filter((s) => s.metric === uv[0]!.attr);
      const groups = [...days.map((d) => live.filter((s) => s.dayKey === dayKey(d)).map((s) => s.blob)), live.map((s) => s.blob)];
      const once = await deps.buckets.sketches.union('S', groups, false);
      expect(once.filter((c) => !c.exact).length).toBe(pk === 'S' ? 4 : 0);

      const union = vi.spyOn(deps.buckets.sketches, 'union');
      const r = await readSeries(deps, { store: 'S', pk, metrics: uv, range, granularity: 'day' });
      const calls = union.mock.calls.map(([, g]) => g.flat());
      union.mockRestore();
      expect(calls.length).toBeGreaterThan(1);
      for (const blobs of calls) {
        expect(blobs.length).toBeLessThanOrEqual(MAX_BLOBS);
        if (blobs.length > 1) expect(blobs.reduce((n, b) => n + b.length, 0)).toBeLessThanOrEqual(MAX_BYTES);
      }
      expect(r.points.map((p) => p.values['UniqueVisitors'])).toEqual(once.slice(0, -1).map((c) => BigInt(c.count)));
      expect(r.points.map((p) => p.estimated ?? [])).toEqual(once.slice(0, -1).map((c) => (c.exact ? [] : ['UniqueVisitors'])));
      expect(r.totals).toEqual({ UniqueVisitors: BigInt(once.at(-1)!.count) });
      expect(r.estimated).toEqual(pk === 'S' ? ['UniqueVisitors'] : []);
      if (pk !== 'S') expect(r.totals).toEqual({ UniqueVisitors: 400n });
    }
  });

  it('keeps a daily series of a month in one call, as before', async () => {
    const deps = await fixture.deps('m');
    const to = parseDate('2026-03-10')!;
    const from = addDays(to, -30);
    // Each of the 31 days has a store sketch of its own (a visitor a day), and the total unions them all.
    const events: NormalizedEvent[] = Array.from({ length: 31 }, (_, i) => ({
      type: 'view',
      ts: Date.parse(`${formatDate(addDays(from, i))}T12:00:00Z`),
      dims: { product: 'P1', visitor: `V${i}` },
    }));
    await deps.buckets.sketches.add('S', rollupDistinct(rules, 'S', 'UTC', events));
    const union = vi.spyOn(deps.buckets.sketches, 'union');
    const r = await readSeries(deps, {
      store: 'S',
      pk: 'S',
      metrics: resolveMetrics(rules, ['UniqueVisitors']),
      range: explicitRange(formatDate(from), formatDate(to)),
      granularity: 'day',
    });
    expect(union).toHaveBeenCalledTimes(1);
    union.mockRestore();
    expect(r.totals).toEqual({ UniqueVisitors: 31n });
  });
});
