/** Value at quantile q (0..1) of an ascending array (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export const ascending = (a: number, b: number) => a - b;
export const median = (xs: readonly number[]) => quantile(xs.toSorted(ascending), 0.5);
export const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
export const mean = (xs: readonly number[]) => sum(xs) / xs.length;

/** `o` with `f` applied to each value. */
export const mapValues = <K extends string, V, W>(o: Record<K, V>, f: (v: V, k: K) => W) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v as V, k as K)])) as Record<K, W>;

/** 12,345 */
export const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : String(n));

/** 1 significant decimal for ratios: 0.42, 3.1, 250 */
export function ratio(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n >= 100) return fmt(n);
  if (n >= 10) return n.toFixed(1);
  if (n >= 1) return n.toFixed(2);
  return n.toPrecision(2);
}

/** Milliseconds with one decimal below 100. */
export const ms = (n: number) => (n >= 100 ? fmt(n) : n.toFixed(1));

/** 7.0%, 42% */
export const pct = (x: number) => `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;

/** Calls `fn` back to back for `ms` (at least 50 calls); returns the latencies in ms, sorted. */
export async function timeLoop(ms: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (const end = performance.now() + ms; performance.now() < end || out.length < 50;) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out.sort(ascending);
}
