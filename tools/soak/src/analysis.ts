/** One sampled series (a process's RSS, Redis used_memory, the flush lag) and how it is judged. */
export interface Series {
  name: string;
  unit: 'MB' | 's' | 'jobs';
  /** [seconds since start, value] */
  samples: Array<[number, number]>;
}

type Growth = ReturnType<typeof judgeGrowth>;

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/**
 * Bounded growth: after `warmupSeconds`, the mean of the last third of the samples may exceed the mean of the
 * first third by at most max(maxRelative × first, maxAbsolute). A leak grows linearly and fails; a cache
 * that fills up and stays fails only if it is still filling in the last third.
 */
export function judgeGrowth(s: Series, warmupSeconds: number, limits: { maxRelative: number; maxAbsolute: number }) {
  const values = s.samples.filter(([t]) => t >= warmupSeconds).map(([, v]) => v);
  const third = Math.max(1, Math.floor(values.length / 3));
  const firstThird = mean(values.slice(0, third));
  const lastThird = mean(values.slice(values.length - third));
  const growth = lastThird - firstThird;
  // (Infinity * 0 is NaN: an unlimited relative bound stays unlimited.)
  const allowed = Math.max(limits.maxRelative === Infinity ? Infinity : limits.maxRelative * firstThird, limits.maxAbsolute);
  // n: samples after the warm-up; growth: lastThird - firstThird, relative: over firstThird.
  const relative = firstThird > 0 ? growth / firstThird : 0;
  const max = values.length ? Math.max(...values) : 0;
  return {
    name: s.name,
    unit: s.unit,
    n: values.length,
    firstThird,
    lastThird,
    growth,
    relative,
    max,
    ok: values.length >= 3 && growth <= allowed,
  };
}

/** A bounded gauge: every sample after the warm-up at most `limit`. */
export function judgeBound(s: Series, warmupSeconds: number, limit: number) {
  const values = s.samples.filter(([t]) => t >= warmupSeconds).map(([, v]) => v);
  const max = values.length ? Math.max(...values) : 0;
  return { name: s.name, max, mean: mean(values), ok: values.length >= 3 && max <= limit, n: values.length };
}

export function formatGrowth(g: Growth): string {
  const f = (v: number) => v.toFixed(1);
  return `${g.ok ? 'ok  ' : 'FAIL'} ${g.name.padEnd(28)} first third ${f(g.firstThird).padStart(8)} ${g.unit}, last third ${f(g.lastThird).padStart(8)} ${g.unit}, growth ${g.growth >= 0 ? '+' : ''}${f(g.growth)} ${g.unit} (${(g.relative * 100).toFixed(1)}%), max ${f(g.max)} ${g.unit}, ${g.n} samples`;
}
