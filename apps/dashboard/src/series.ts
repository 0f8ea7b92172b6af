// Pure data shaping between the API's points and what the views show: a period and the one before it, aligned
// point by point; exact sums of decimal strings; today's live point patched into the day series.
import type { SeriesPoint } from './api';
import { DECIMAL, toNumber, type MetricValue } from './format';
import { periodStartMs } from './periods';

export interface Compared {
  /** The periods shown (days or months), oldest first. */
  periods: string[];
  /** The periods compared with them, aligned: `previousPeriods[i]` is compared with `periods[i]`. */
  previousPeriods: string[];
  current: SeriesPoint[];
  previous: SeriesPoint[];
}

/**
 * Picks the points of `periods` and of `previousPeriods` out of one answer. A period the answer lacks counts as
 * zero for every metric (a store with no events yet), never as a gap in the middle of a line.
 */
export function compare(
  points: readonly SeriesPoint[],
  periods: string[],
  previousPeriods: string[],
  metrics: readonly string[],
): Compared {
  const byPeriod = new Map(points.map((p) => [p.period, p]));
  const zero = (period: string): SeriesPoint => ({ period, values: Object.fromEntries(metrics.map((m) => [m, 0])) });
  const pick = (period: string) => byPeriod.get(period) ?? zero(period);
  return { periods, previousPeriods, current: periods.map(pick), previous: previousPeriods.map(pick) };
}

/**
 * `points` with the point of `period` replaced by `values` (today's live answer into the 30-day series); which of
 * the replaced values are estimates is then `estimated`'s say.
 */
export function patchPoint(
  points: readonly SeriesPoint[],
  period: string,
  values: Record<string, MetricValue>,
  estimated?: readonly string[],
): SeriesPoint[] {
  return points.map((p) => {
    if (p.period !== period) return p;
    const marks = [...(p.estimated ?? []).filter((m) => !Object.hasOwn(values, m)), ...(estimated ?? [])];
    const patched = { period, values: { ...p.values, ...values } };
    return marks.length > 0 ? { ...patched, estimated: marks } : patched;
  });
}

export function withToday(compared: Compared, today: SeriesPoint): Compared {
  return { ...compared, current: patchPoint(compared.current, today.period, today.values, today.estimated) };
}

/** Before a value the API says is an estimate (a HyperLogLog's distinct count); ESTIMATE_TITLE explains it. */
export const ESTIMATE_MARK = '\u2248\u202f';
export const ESTIMATE_TITLE =
  'An estimate: past 300 distinct visitors in a day, Tally counts them with a HyperLogLog (standard error 0.81%)';

/** Whether the API says `metric`'s value in `point` is an estimate. */
export const isEstimate = (point: SeriesPoint | undefined, metric: string) => point?.estimated?.includes(metric) === true;

/** uPlot's aligned data: x (seconds of each period's start, as UTC) and the current and previous values. */
export function chartData(compared: Compared, metric: string): [number[], number[], number[]] {
  return [
    compared.periods.map((p) => periodStartMs(p) / 1000),
    compared.current.map((p) => toNumber(p.values[metric])),
    compared.previous.map((p) => toNumber(p.values[metric])),
  ];
}

/** The API's exact value of `metric` at point `i` (the chart plots floats, wrong past 2^53); null past the ends. */
export function pointValue(compared: Compared | undefined, which: 'current' | 'previous', i: number, metric: string): MetricValue | null {
  const point = compared?.[which][i];
  return point ? (point.values[metric] ?? 0) : null;
}

export function isEmpty(compared: Compared, metric: string): boolean {
  return [...compared.current, ...compared.previous].every((p) => toNumber(p.values[metric]) === 0);
}

/**
 * Exact sum: numbers add as numbers while the sum stays within Number.MAX_SAFE_INTEGER; if any value is a decimal
 * string (the API sends counts above 2^53 as strings) or the sum passes it, the sum is a decimal string at `scale`.
 */
export function sumValues(values: readonly (MetricValue | undefined)[], scale: number): MetricValue {
  const present = values.filter((v): v is MetricValue => v !== undefined);
  if (!present.some((v) => typeof v === 'string')) {
    let sum = 0;
    for (const v of present as number[]) {
      sum += v;
      if (Math.abs(sum) > Number.MAX_SAFE_INTEGER) break;
    }
    if (Math.abs(sum) <= Number.MAX_SAFE_INTEGER) return sum;
  }
  const digits = Math.max(scale, ...present.map((v) => (typeof v === 'string' ? (DECIMAL.exec(v)?.[3]?.length ?? 0) : 0)));
  let minor = 0n;
  for (const v of present) {
    const m = DECIMAL.exec(typeof v === 'string' ? v : v.toFixed(digits));
    if (!m) continue;
    const units = BigInt(m[2]! + (m[3] ?? '').padEnd(digits, '0'));
    minor += m[1] === '-' ? -units : units;
  }
  const negative = minor < 0n;
  const abs = (negative ? -minor : minor).toString().padStart(digits + 1, '0');
  const whole = abs.slice(0, abs.length - digits);
  const fraction = abs.slice(abs.length - digits);
  return `${negative ? '-' : ''}${whole}${digits > 0 ? `.${fraction}` : ''}`;
}

/** The total of `metric` over a list of points. */
export function totalOf(points: readonly SeriesPoint[], metric: string, scale: number): MetricValue {
  return sumValues(
    points.map((p) => p.values[metric]),
    scale,
  );
}

/**
 * Which of `xs` get a label when at most `maxTicks` fit: every n-th, counted back from the last (today, this
 * month), so the newest period is always labelled.
 */
export function pickTicks(xs: readonly number[], maxTicks: number): number[] {
  if (xs.length === 0) return [];
  const step = Math.max(1, Math.ceil(xs.length / Math.max(1, Math.floor(maxTicks))));
  return xs.filter((_, i) => (xs.length - 1 - i) % step === 0);
}

/** A round upper bound for an axis: the smallest 1, 2, 2.5 or 5 × 10^k at or above `max` (1 when nothing). */
export function niceCeil(max: number): number {
  if (!(max > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(max));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * exp >= max) return f * exp;
  return 10 * exp;
}
