import type { BucketStore } from '@tally/buckets';
import { getItem, getItems, mergeItems, queryItems, type RowReaderDeps, type StoredItem } from '@tally/dynamo';
import { dayAttr, dayKey, formatDate, monthAttr, monthSk, TOTAL_SK, totalAttr, yearAttr } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import { QueryError } from './errors';
import type { HistoryMemo } from './history-memo';
import { daysOf, monthsOf, type DateRange } from './ranges';

export type Granularity = 'day' | 'month' | 'year' | 'total';

export interface QueryDeps {
  buckets: BucketStore;
  dynamo: RowReaderDeps;
  rules: CompiledRules;
  /** In-process parsed visitor histories (see HistoryMemo); optional. */
  historyMemo?: HistoryMemo;
}

export interface SeriesPoint {
  /** `2023-05-03` (day), `2023-05` (month), `2023` (year) or `total`. */
  period: string;
  values: Record<string, bigint>;
}

export interface SeriesResult {
  points: SeriesPoint[];
  totals: Record<string, bigint>;
  /** DynamoDB requests made to answer. */
  dynamoRequests: number;
}

/** A metric asked for by name, optionally sub-keyed (`ProductViews#P1`), with its attribute name. */
export interface MetricRef {
  name: string;
  attr: string;
}

/** Resolves metric names of a request (`ViewCount`, `ProductViews#P1`) to attribute names; unknown -> 400. */
export function resolveMetrics(rules: CompiledRules, names: readonly string[]): MetricRef[] {
  if (names.length === 0) throw new QueryError('metrics', 'name at least one metric');
  return names.map((name) => {
    const hash = name.indexOf('#');
    const base = hash < 0 ? name : name.slice(0, hash);
    if (!rules.rules.metrics[base]) {
      throw new QueryError('metrics', `unknown metric ${JSON.stringify(base)}; known: ${Object.keys(rules.rules.metrics).join(', ')}`);
    }
    return { name, attr: rules.attrMetric(base, hash < 0 ? undefined : name.slice(hash + 1)) };
  });
}

function pointsFrom(merged: Map<string, Map<string, bigint>>, metrics: MetricRef[], range: DateRange, granularity: Granularity): SeriesPoint[] {
  const cell = (sk: string, attr: string) => merged.get(sk)?.get(attr) ?? 0n;
  const values = (f: (m: MetricRef) => bigint) => Object.fromEntries(metrics.map((m) => [m.name, f(m)]));
  switch (granularity) {
    case 'day':
      return daysOf(range).map((d) => ({ period: formatDate(d), values: values((m) => cell(monthSk(d.year, d.month), dayAttr(d.doy, m.attr))) }));
    case 'month':
      return monthsOf(range).map(({ year, month }) => ({
        period: `${year}-${String(month).padStart(2, '0')}`,
        values: values((m) => cell(monthSk(year, month), monthAttr(month, m.attr))),
      }));
    case 'year': {
      const out: SeriesPoint[] = [];
      for (let y = range.from.year; y <= range.to.year; y++) out.push({ period: String(y), values: values((m) => cell(TOTAL_SK, yearAttr(y, m.attr))) });
      return out;
    }
    case 'total':
      return [{ period: 'total', values: values((m) => cell(TOTAL_SK, totalAttr(m.attr))) }];
  }
}

function sumPoints(points: SeriesPoint[], metrics: MetricRef[]): Record<string, bigint> {
  const totals = Object.fromEntries(metrics.map((m) => [m.name, 0n]));
  for (const p of points) for (const m of metrics) totals[m.name] = totals[m.name]! + p.values[m.name]!;
  return totals;
}

/**
 * A series for one entity row: DynamoDB items plus exactly the Redis counts they do not hold yet (one atomic
 * Redis snapshot first, then consistent reads; an entry counts only above its item's watermark). Day and
 * month granularity read the month rows of the range with one Query; year and total read the TOTAL item.
 */
export async function readSeries(
  deps: QueryDeps,
  req: { store: string; pk: string; metrics: MetricRef[]; range: DateRange; granularity: Granularity },
): Promise<SeriesResult> {
  const [snap] = await deps.buckets.snapshot(req.store, [req.pk]);
  let items: StoredItem[];
  let dynamoRequests: number;
  if (req.granularity === 'day' || req.granularity === 'month') {
    const q = await queryItems(deps.dynamo, req.pk, monthSk(req.range.from.year, req.range.from.month), monthSk(req.range.to.year, req.range.to.month));
    items = q.items;
    dynamoRequests = q.requests;
  } else {
    const total = await getItem(deps.dynamo, req.pk, TOTAL_SK);
    items = total ? [total] : [];
    dynamoRequests = 1;
  }
  const merged = mergeItems(items, snap!.entries);
  const points = pointsFrom(merged, req.metrics, req.range, req.granularity);
  return { points, totals: sumPoints(points, req.metrics), dynamoRequests };
}

/**
 * Totals over a range (or all time) for many rows of one store at once: one Redis snapshot for all rows,
 * BatchGetItem of the month items (or TOTAL items) of every row.
 */
export async function readTotals(
  deps: QueryDeps,
  req: { store: string; pks: readonly string[]; metrics: MetricRef[]; range: DateRange | 'all' },
): Promise<{ rows: Array<{ pk: string; values: Record<string, bigint> }>; dynamoRequests: number }> {
  const snaps = await deps.buckets.snapshot(req.store, req.pks);
  const sks = req.range === 'all' ? [TOTAL_SK] : monthsOf(req.range).map((m) => monthSk(m.year, m.month));
  const keys = req.pks.flatMap((pk) => sks.map((sk) => ({ pk, sk })));
  const { items, requests } = await getItems(deps.dynamo, keys);
  const rows = snaps.map((snap) => {
    const own = sks.map((sk) => items.get(`${snap.pk}\u0000${sk}`)).filter((x): x is StoredItem => x !== undefined);
    const merged = mergeItems(own, snap.entries);
    const points = req.range === 'all' ? pointsFrom(merged, req.metrics, { from: { year: 0, month: 1, day: 1, doy: 1 }, to: { year: 0, month: 1, day: 1, doy: 1 } }, 'total') : pointsFrom(merged, req.metrics, req.range, 'day');
    return { pk: snap.pk, values: sumPoints(points, req.metrics) };
  });
  return { rows, dynamoRequests: requests };
}

/** Day keys (`YYYY-DDD`) of a range, for rankings. */
export function dayKeysOf(range: DateRange): string[] {
  return daysOf(range).map((d) => dayKey(d));
}
