import type { BucketStore, LiveSketch, TopHistory } from '@tally/buckets';
import { getItem, getItems, ItemBudgetError, mergeItems, queryItems, type RowReaderDeps, type StoredItem } from '@tally/dynamo';
import {
  dayAttr,
  dayKey,
  dayOfYear,
  daysInMonth,
  formatDate,
  monthAttr,
  monthSk,
  parseYearAttr,
  TOTAL_SK,
  totalAttr,
  yearAttr,
} from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import { coverOf, type Cell } from './cover';
import { countUnions, distinctMetricsOf, pointGroup, rangeGroup } from './distinct';
import { QueryError } from './errors';
import type { HistoryMemo } from './history-memo';
import { daysOf, monthsOf, type DateRange, type QueryRange } from './ranges';
import { checkMetricName } from './rules-introspection';

export type Granularity = 'day' | 'month' | 'year' | 'total';

/** DynamoDB items one query may read unless configured otherwise (MAX_ITEMS_PER_QUERY): 20 BatchGetItem calls. */
const DEFAULT_MAX_ITEMS_PER_QUERY = 2_000;

export interface QueryDeps {
  buckets: BucketStore;
  dynamo: RowReaderDeps;
  rules: CompiledRules;
  /** In-process parsed visitor histories (see HistoryMemo); optional. */
  historyMemo?: HistoryMemo;
  /** Most DynamoDB items one query may read; a query that needs more is refused (QueryError). Default DEFAULT_MAX_ITEMS_PER_QUERY. */
  maxItemsPerQuery?: number;
  /**
   * How far back top lists reach (oldestTopDay in top.ts): `days`, the query API's TOP_HISTORY_DAYS (never further
   * back than the rankings kept this long allow), and `history`, the aggregators' record of how long they kept them
   * (readTopHistory of @tally/buckets), read per top list. Unset: RANK_TTL_DAYS days since ever, the default.
   */
  topReach?: { days: number; history(): Promise<TopHistory> };
  /** Ranking members one top list may union (TOP_MAX_MEMBERS; readTop). Default TOP_MAX_MEMBERS of @tally/buckets. */
  topMaxMembers?: number;
}

export interface SeriesPoint {
  /** `2023-05-03` (day), `2023-05` (month), `2023` (year) or `total`. */
  period: string;
  values: Record<string, bigint>;
  /** The metrics whose value in this point is a HyperLogLog's estimate; absent when every value is exact. */
  estimated?: string[];
}

export interface SeriesResult {
  points: SeriesPoint[];
  totals: Record<string, bigint>;
  /** The metrics any of whose values is a HyperLogLog's estimate (a distinct count past EXACT_THRESHOLD in a day). */
  estimated: string[];
  /** DynamoDB requests made to answer. */
  dynamoRequests: number;
}

/** One row's totals over a range (readTotals). */
interface TotalsRow {
  pk: string;
  values: Record<string, bigint>;
  /** The metrics whose value is a HyperLogLog's estimate; absent when every value is exact. */
  estimated?: string[];
}

/** A metric asked for by name, optionally sub-keyed (`ProductViews#P1`), with its attribute name. */
export interface MetricRef {
  name: string;
  attr: string;
}

/**
 * Resolves metric names of a request (`ViewCount`, `ProductViews#P1`) to attribute names, each checked against
 * the rules (known, keyed exactly when the metric is); a QueryError names `field`.
 */
export function resolveMetrics(rules: CompiledRules, names: readonly string[], field = 'metrics'): MetricRef[] {
  if (names.length === 0) throw new QueryError(field, 'name at least one metric');
  return names.map((name) => {
    const { base, sub } = checkMetricName(rules, name, field);
    return { name, attr: rules.attrMetric(base, sub) };
  });
}

const maxItems = (deps: QueryDeps) => deps.maxItemsPerQuery ?? DEFAULT_MAX_ITEMS_PER_QUERY;

/** Refuses a query that would read more than the configured number of DynamoDB items, before it reads any. */
function checkCost(deps: QueryDeps, items: number, field: string, what: string): void {
  const max = maxItems(deps);
  if (items > max) {
    throw new QueryError(
      field,
      `this query would read ${items} DynamoDB items (${what}); at most ${max} per query: ask for fewer ids or a shorter range`,
    );
  }
}

/**
 * Runs a read bounded by the configured maximum, overflow items included: the overflow items of a spilled row are
 * known only once its item is read, so a query that fits the bound before reading can still pass it; it is then
 * refused (QueryError naming `field`) before the read that would pass it (see getItems, queryItems).
 */
async function bounded<T>(field: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (!(err instanceof ItemBudgetError)) throw err;
    throw new QueryError(
      field,
      `this query would read at least ${err.needed} DynamoDB items (${err.spilled === 1 ? 'a row has' : 'rows have'} more counters than one item holds, in overflow items); at most ${err.max} per query: ask for fewer ids or a shorter range`,
    );
  }
}

/**
 * A point of a series: its label, the counter cells it sums (one, but for a year summed from its months), and its
 * first and last day keys (for the live sketches).
 */
type PeriodCell = { period: string; cells: Cell[]; from: string; to: string };

/** The month points of a range, oldest first: every calendar month it touches, each its month cell. */
const monthPeriodsOf = (range: DateRange): PeriodCell[] =>
  monthsOf(range).map(({ year, month }) => ({
    period: `${yearLabel(year)}-${String(month).padStart(2, '0')}`,
    cells: [{ sk: monthSk(year, month), attr: (a) => monthAttr(month, a) }],
    from: dayKey({ year, doy: dayOfYear(year, month, 1) }),
    to: dayKey({ year, doy: dayOfYear(year, month, daysInMonth(year, month)) }),
  }));

/**
 * The points of a series over dates, oldest first: every day, calendar month or year the range touches. A year is
 * the TOTAL item's year cell, or with `yearsFromMonths` the sum of its months' cells (whole months only).
 */
function periodsOf(range: DateRange, granularity: Exclude<Granularity, 'total'>, yearsFromMonths: boolean): PeriodCell[] {
  switch (granularity) {
    case 'day':
      return daysOf(range).map((d) => {
        const key = dayKey(d);
        return { period: formatDate(d), cells: [{ sk: monthSk(d.year, d.month), attr: (a) => dayAttr(d.doy, a) }], from: key, to: key };
      });
    case 'month':
      return monthPeriodsOf(range);
    case 'year':
      if (!yearsFromMonths) return yearsFrom(range.from.year, range.to.year);
      return yearsFrom(range.from.year, range.to.year).map((y) => {
        const months = monthPeriodsOf(range).filter((m) => m.period.startsWith(`${y.period}-`));
        return { period: y.period, cells: months.flatMap((m) => m.cells), from: months[0]!.from, to: months[months.length - 1]!.to };
      });
  }
}

/** A year as the API writes it: four digits (`0999`), as in its dates. */
const yearLabel = (year: number) => String(year).padStart(4, '0');

/** A point per year from `first` to `last`, each the TOTAL item's year cell. */
const yearsFrom = (first: number, last: number): PeriodCell[] =>
  Array.from({ length: last - first + 1 }, (_, i) => first + i).map((year) => ({
    period: yearLabel(year),
    cells: [{ sk: TOTAL_SK, attr: (a) => yearAttr(year, a) }],
    from: dayKey({ year, doy: 1 }),
    to: dayKey({ year, doy: 366 }),
  }));

/**
 * All time by year: a point per year from the first to the last that the row's TOTAL item (with Redis's counts merged)
 * has a year count of any metric for, years between without counts included at zero; none for a row with no counts.
 */
function yearsOfRow(merged: Map<string, Map<string, bigint>>): PeriodCell[] {
  const years = [...(merged.get(TOTAL_SK)?.keys() ?? [])].flatMap((attr) => parseYearAttr(attr) ?? []);
  return years.length === 0 ? [] : yearsFrom(Math.min(...years), Math.max(...years));
}

function sumPoints(points: SeriesPoint[], metrics: MetricRef[]): Record<string, bigint> {
  const totals = Object.fromEntries(metrics.map((m) => [m.name, 0n]));
  for (const p of points) for (const m of metrics) totals[m.name] = totals[m.name]! + p.values[m.name]!;
  return totals;
}

/** Sum of each metric over the cells of a cover, from merged items. */
function sumCells(merged: Map<string, Map<string, bigint>>, metrics: MetricRef[], cells: Cell[]): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const m of metrics) {
    let v = 0n;
    for (const c of cells) v += merged.get(c.sk)?.get(c.attr(m.attr)) ?? 0n;
    out[m.name] = v;
  }
  return out;
}

/**
 * A series for one entity row: DynamoDB items plus exactly the Redis counts they do not hold yet (one atomic
 * Redis snapshot first, then consistent reads; an entry counts only above its item's watermark). Day and
 * month granularity read the month rows of the range with one Query; year granularity and range 'all' read the
 * TOTAL item with one GetItem (readTotalItem), range 'all' by year a point per year that has counts (yearsOfRow),
 * unless `yearsFromMonths`; granularity total over dates reads the coarsest items that cover them (see coverOf).
 * With `yearsFromMonths` (a visitor under a history limit or after one, whose TOTAL item still holds months not kept)
 * a year over dates is not the TOTAL item's year cell but the sum of its months in the range, read like month
 * granularity, and granularity total reads no year cell either (readTotals `yearsFromMonths`).
 */
export async function readSeries(
  deps: QueryDeps,
  req: { store: string; pk: string; metrics: MetricRef[]; range: QueryRange; granularity: Granularity; yearsFromMonths?: boolean },
): Promise<SeriesResult> {
  const { store, pk, range, granularity } = req;
  const yearsFromMonths = req.yearsFromMonths === true && granularity === 'year';
  // Points read from the range's month items (one Query), not from the TOTAL item.
  const byMonths = range !== 'all' && (granularity === 'day' || granularity === 'month' || yearsFromMonths);
  if (range === 'all') {
    if (granularity === 'day' || granularity === 'month')
      throw new QueryError('granularity', `range allTime answers granularity year or total, not ${granularity}`);
  } else if (granularity === 'total') {
    const r = await readTotals(deps, { store, pks: [pk], metrics: req.metrics, range, yearsFromMonths: req.yearsFromMonths === true });
    const { values, estimated } = r.rows[0]!;
    const point: SeriesPoint = estimated ? { period: 'total', values, estimated } : { period: 'total', values };
    return { points: [point], totals: values, estimated: r.estimated, dynamoRequests: r.dynamoRequests };
  } else if (byMonths) {
    const months = monthsOf(range).length;
    checkCost(deps, months, 'range', `${months} month items`);
  }
  const distinct = distinctMetricsOf(deps.rules, pk, req.metrics);
  const [snap] = await deps.buckets.snapshot(store, [pk]);
  // Live sketches before DynamoDB, like the counts' snapshot (a sketch written in between is then in DynamoDB).
  const live = distinct.size > 0 ? (await deps.buckets.sketches.read(store, [pk]))[0]! : [];
  // Day and month points read the range's month items (and their overflow items) with one Query; the rest the TOTAL item.
  const { items, requests: dynamoRequests } = await bounded('range', () =>
    byMonths
      ? queryItems(deps.dynamo, pk, monthSk(range.from.year, range.from.month), monthSk(range.to.year, range.to.month), maxItems(deps))
      : readTotalItem(deps, pk),
  );
  const merged = mergeItems(items, snap!.entries);
  // Over dates a point per period, each the sum of its cell; all time by year a point per year with counts; all
  // time one point, from the TOTAL item.
  const periods =
    granularity === 'total' ? undefined : range === 'all' ? yearsOfRow(merged) : periodsOf(range, granularity, yearsFromMonths);
  const points = periods
    ? periods.map((p) => ({ period: p.period, values: sumCells(merged, req.metrics, p.cells) }))
    : [{ period: 'total', values: sumCells(merged, req.metrics, [{ sk: TOTAL_SK, attr: totalAttr }]) }];
  const totals = sumPoints(points, req.metrics);
  const metrics = req.metrics.filter((m) => distinct.has(m.attr));
  const estimated = metrics.length > 0 ? await fillDistinctSeries(deps, store, metrics, items, live, periods, points, totals) : [];
  return { points, totals, estimated, dynamoRequests };
}

/**
 * A row's TOTAL item and, only when it has spilled, its overflow items: one GetItem for every row that never spilled
 * (a GetItem costs DynamoDB, and dynalite, less than a Query of the same item), one Query more for a spilled one. The
 * overflow items are read after the item, each with its own watermark, like getItems' later rounds: exact, as the
 * snapshot came first. Overflow items count against the configured maximum, the TOTAL item too (ItemBudgetError).
 */
async function readTotalItem(deps: QueryDeps, pk: string): Promise<{ items: StoredItem[]; requests: number }> {
  const total = await getItem(deps.dynamo, pk, TOTAL_SK);
  if (!total?.spilled) return { items: total ? [total] : [], requests: 1 };
  try {
    // `TOTAL#` sorts after TOTAL and before its first overflow item, `TOTAL#0`; queryItems reads up to `TOTAL#~`.
    const rest = await queryItems(deps.dynamo, pk, `${TOTAL_SK}#`, TOTAL_SK, maxItems(deps) - 1);
    return { items: [total, ...rest.items], requests: 1 + rest.requests };
  } catch (err) {
    if (err instanceof ItemBudgetError) throw new ItemBudgetError(err.needed + 1, err.max + 1, err.spilled + 1);
    throw err;
  }
}

/**
 * Sets the distinct counts of a series (`periods` its points over dates; undefined for all time): each point the
 * union of its period's cell and the live sketches of its days; the totals the union of every point's (not a sum:
 * a visitor of two days is one visitor). Returns the metrics any of whose counts is an estimate.
 */
async function fillDistinctSeries(
  deps: QueryDeps,
  store: string,
  metrics: MetricRef[],
  items: StoredItem[],
  live: LiveSketch[],
  periods: PeriodCell[] | undefined,
  points: SeriesPoint[],
  totals: Record<string, bigint>,
): Promise<string[]> {
  const byItem = new Map(items.map((i) => [i.sk, i]));
  const groups: Buffer[][] = [];
  const slots: DistinctSlot[] = [];
  for (const m of metrics) {
    if (!periods) {
      groups.push(rangeGroup(byItem, live, m.attr, 'all', []));
      slots.push([points[0]!, m.name], [{ values: totals }, m.name]);
      groups.push(groups[groups.length - 1]!);
      continue;
    }
    const all: Buffer[] = [];
    periods.forEach((p, i) => {
      const g = pointGroup(byItem, live, m.attr, p);
      groups.push(g);
      slots.push([points[i]!, m.name]);
      all.push(...g);
    });
    groups.push(all);
    slots.push([{ values: totals }, m.name]);
  }
  return setDistinct(deps, store, groups, slots);
}

/** Where a distinct count goes: a point's (or row's, or the totals') values, and the metric's name. */
type DistinctSlot = [{ values: Record<string, bigint>; estimated?: string[] }, string];

/**
 * Counts the groups' unions into their slots, listing an estimated count's metric in its slot's `estimated`;
 * returns the metrics of the estimated ones.
 */
async function setDistinct(deps: QueryDeps, store: string, groups: Buffer[][], slots: readonly DistinctSlot[]): Promise<string[]> {
  const estimated = new Set<string>();
  if (groups.length === 0) return [];
  const counts = await countUnions(deps.buckets.sketches, store, groups);
  counts.forEach((c, i) => {
    const [slot, metric] = slots[i]!;
    slot.values[metric] = BigInt(c.count);
    if (c.exact) return;
    estimated.add(metric);
    (slot.estimated ??= []).push(metric);
  });
  return [...estimated];
}

/**
 * Totals over a range (or all time) for many rows of one store at once: one Redis snapshot for all rows,
 * BatchGetItem of the coarsest items that cover the range for every row (whole years from TOTAL, whole months
 * from the month attributes, the days of partial months), or the TOTAL items for 'all'. A query needing more
 * items than the configured maximum is refused before anything is read. The overflow items of spilled items
 * (rows past SPILL_AT_KB), known only once their item is read, count too: a query they would take past the
 * maximum is refused before that round is read. The QueryError names `costField` (default `ids` for many rows,
 * `range` for one). With `yearsFromMonths` (visitor rows under a history limit or after one, their range clamped to
 * the first day kept: TOTAL still holds the months TTL deleted, in its year and all-time cells) whole years are
 * summed from their month items like series by year and segment rules: one item per month of the range and row,
 * refused past the maximum (a window of 1,200 months reads 1,200 items for one visitor).
 */
export async function readTotals(
  deps: QueryDeps,
  req: { store: string; pks: readonly string[]; metrics: MetricRef[]; range: QueryRange; costField?: string; yearsFromMonths?: boolean },
): Promise<{ rows: TotalsRow[]; estimated: string[]; dynamoRequests: number }> {
  const cells: Cell[] = req.range === 'all' ? [{ sk: TOTAL_SK, attr: totalAttr }] : coverOf(req.range, req.yearsFromMonths === true);
  const sks = [...new Set(cells.map((c) => c.sk))];
  const field = req.costField ?? (req.pks.length > 1 ? 'ids' : 'range');
  checkCost(
    deps,
    req.pks.length * sks.length,
    field,
    `${req.pks.length} ${req.pks.length === 1 ? 'row' : 'rows'} × ${sks.length} items for the range`,
  );
  const distinct = req.pks.length > 0 ? distinctMetricsOf(deps.rules, req.pks[0]!, req.metrics) : new Set<string>();
  const snaps = await deps.buckets.snapshot(req.store, req.pks);
  const live = distinct.size > 0 ? await deps.buckets.sketches.read(req.store, req.pks) : [];
  const keys = req.pks.flatMap((pk) => sks.map((sk) => ({ pk, sk })));
  const { items, requests } = await bounded(field, () => getItems(deps.dynamo, keys, maxItems(deps)));
  const byPk = Map.groupBy(items, ([key]) => key.slice(0, key.indexOf('\u0000')));
  const groups: Buffer[][] = [];
  const slots: DistinctSlot[] = [];
  const rows = snaps.map((snap, r): TotalsRow => {
    const own = (byPk.get(snap.pk) ?? []).map(([, item]) => item);
    const row: TotalsRow = { pk: snap.pk, values: sumCells(mergeItems(own, snap.entries), req.metrics, cells) };
    for (const m of req.metrics) {
      if (!distinct.has(m.attr)) continue;
      groups.push(rangeGroup(new Map(own.map((i) => [i.sk, i])), live[r]!, m.attr, req.range, cells));
      slots.push([row, m.name]);
    }
    return row;
  });
  const estimated = await setDistinct(deps, req.store, groups, slots);
  return { rows, estimated, dynamoRequests: requests };
}
