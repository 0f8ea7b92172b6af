import { describe, expect, it } from 'vitest';
import { judgeBound, judgeGrowth, type Series } from './soak';

const series = (f: (t: number) => number): Series => ({
  name: 'x',
  unit: 'MB',
  samples: Array.from({ length: 60 }, (_, i) => [i * 5, f(i * 5)]),
});
const limits = { maxRelative: 0.2, maxAbsolute: 5 };

describe('soak analysis', () => {
  it('passes a flat series and one that fills up during the warm-up', () => {
    expect(
      judgeGrowth(
        series(() => 100),
        30,
        limits,
      ).ok,
    ).toBe(true);
    expect(
      judgeGrowth(
        series((t) => 100 + Math.min(t, 30)),
        30,
        limits,
      ),
    ).toMatchObject({ ok: true, growth: 0 });
    expect(
      judgeGrowth(
        series((t) => 100 + (t % 10 === 0 ? 3 : -3)),
        30,
        limits,
      ).ok,
    ).toBe(true);
  });

  it('fails a leak: linear growth after the warm-up', () => {
    const g = judgeGrowth(
      series((t) => 100 + t * 0.5),
      30,
      limits,
    );
    expect(g.ok).toBe(false);
    // Thirds of t = 30..295 (18 samples each): means at t = 72.5 and t = 252.5.
    expect(g.growth).toBeCloseTo(0.5 * (252.5 - 72.5), 6);
  });

  it('bounds a gauge and needs samples to judge anything', () => {
    expect(
      judgeBound(
        series(() => 2),
        30,
        10,
      ),
    ).toMatchObject({ ok: true, max: 2 });
    expect(
      judgeBound(
        series((t) => (t === 200 ? 12 : 2)),
        30,
        10,
      ).ok,
    ).toBe(false);
    expect(judgeGrowth({ name: 'x', unit: 'MB', samples: [[40, 1]] }, 30, limits).ok).toBe(false);
  });
});

describe('unlimited growth bounds', () => {
  it('an info series with no limit is never judged failed, even when it stays at zero', () => {
    const zero: Series = { ...series(() => 0), name: 'z' };
    expect(judgeGrowth(zero, 0, { maxRelative: Infinity, maxAbsolute: Infinity }).ok).toBe(true);
  });
});
