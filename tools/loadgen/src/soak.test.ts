import { describe, expect, it } from 'vitest';
import { judgeBound, judgeGrowth, shortestSoakSeconds, soakWarmup, type Series } from './soak';

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

describe('the shortest soak run', () => {
  const timing = (o: { warmup?: number; dedupe?: number; sample?: number } = {}) => ({
    'warmup-seconds': o.warmup,
    'dedupe-window': o.dedupe ?? 60,
    'sample-seconds': o.sample ?? 5,
  });

  it('leaves room for 3 samples after the warm-up: 90 s with the defaults (--minutes 1 could only FAIL)', () => {
    expect(soakWarmup(timing(), 60)).toBe(75);
    expect(shortestSoakSeconds(timing())).toBe(90);
    expect(shortestSoakSeconds(timing({ warmup: 30 }))).toBe(45);
    expect(shortestSoakSeconds(timing({ warmup: 0, sample: 1 }))).toBe(3);
    // A long dedupe window: the warm-up stops at 180 s.
    expect(shortestSoakSeconds(timing({ dedupe: 3_600 }))).toBe(195);
    // Samples far apart: the run is long enough that its warm-up is a fifth of it.
    expect(shortestSoakSeconds(timing({ sample: 100 }))).toBe(375);
    expect(soakWarmup(timing({ sample: 100 }), 375)).toBe(75);
  });

  it('is the shortest: a second less has its warm-up and 3 samples no more, for any timing', () => {
    for (const warmup of [undefined, 0, 10, 200])
      for (const dedupe of [60, 100, 300, 86_400])
        for (const sample of [1, 5, 7.5, 60, 200]) {
          const o = timing({ warmup, dedupe, sample });
          const s = shortestSoakSeconds(o);
          const judged = (run: number) => run - soakWarmup(o, run) >= 3 * sample;
          expect(judged(s), JSON.stringify(o)).toBe(true);
          expect(judged(s - 1), JSON.stringify(o)).toBe(false);
          // Sampled every `sample` s (each sample a little late) until the run ends, and once more then: 3 after the warm-up.
          const times = [
            ...Array.from({ length: Math.floor(s / sample) }, (_, k) => (k + 1) * (sample + 0.01 * sample)).filter((t) => t < s),
            s,
          ];
          expect(times.filter((t) => t >= soakWarmup(o, s)).length, JSON.stringify(o)).toBeGreaterThanOrEqual(3);
        }
  });
});
