/**
 * A metric as requests and attributes name it: `ViewCount`, or a keyed metric with its key, `ProductViews#P1`.
 * The key is everything after the first `#` (keys never hold `#`; ids are `A-Z a-z 0-9 _ . : -`).
 */
export interface MetricName {
  base: string;
  /** The key of a keyed metric (`P1` of `ProductViews#P1`); undefined without one. */
  sub: string | undefined;
}

/** `ProductViews#P1` → `{ base: 'ProductViews', sub: 'P1' }`; `ViewCount` → `{ base: 'ViewCount', sub: undefined }`. */
export function parseMetricName(name: string): MetricName {
  const hash = name.indexOf('#');
  return hash < 0 ? { base: name, sub: undefined } : { base: name.slice(0, hash), sub: name.slice(hash + 1) };
}

/** The inverse of parseMetricName. */
export function formatMetricName(base: string, sub?: string): string {
  return sub === undefined ? base : `${base}#${sub}`;
}
