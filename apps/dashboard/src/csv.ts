// CSV export of a chart's data: the values exactly as the query API answered them (counts as integers, money as
// exact decimal strings), one row per period with the period it is compared with, every metric of the chart.
import type { MetricValue } from './format';
import type { ShownMetric } from './metrics';
import type { SeriesPoint } from './api';
import { isEstimate, type Compared } from './series';

/** One field, quoted when it holds a comma, a quote or a line break (RFC 4180). */
function field(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** Rows to CSV text, CRLF line ends (RFC 4180). */
export function toCsv(rows: ReadonlyArray<ReadonlyArray<string>>): string {
  return rows.map((r) => r.map(field).join(',')).join('\r\n') + '\r\n';
}

const text = (v: MetricValue | undefined) => (v === undefined ? '' : String(v));

/**
 * A chart's data as CSV: `period` and each counted metric, then `compared_period` and each metric again for it.
 * `kind` names the period column (`day`, `month`). A distinct count (unique visitors) has a column `<name>_estimate`
 * beside its values: `true` where the API says that value is a HyperLogLog's estimate.
 */
export function chartCsv(compared: Compared, metrics: readonly ShownMetric[], kind: 'day' | 'month'): string {
  const counted = metrics.filter((m) => m.counted);
  const distinct = counted.filter((m) => !m.additive);
  const columns = (prefix: string) => [...counted.map((m) => prefix + m.name), ...distinct.map((m) => `${prefix}${m.name}_estimate`)];
  const cells = (point: SeriesPoint | undefined) => [
    ...counted.map((m) => text(point?.values[m.name])),
    ...distinct.map((m) => (point ? String(isEstimate(point, m.name)) : '')),
  ];
  const header = [kind, ...columns(''), `compared_${kind}`, ...columns('compared_')];
  const rows = compared.periods.map((p, i) => [
    p,
    ...cells(compared.current[i]),
    compared.previousPeriods[i] ?? '',
    ...cells(compared.previous[i]),
  ]);
  return toCsv([header, ...rows]);
}

/** Hands `csv` to the browser as a download named `filename`. */
export function downloadCsv(csv: string, filename: string): void {
  const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
