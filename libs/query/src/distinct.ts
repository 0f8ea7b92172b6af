import type { LiveSketch } from '@tally/buckets';
import { fromStoredSketch, storedSketchesOf, type StoredItem } from '@tally/dynamo';
import { dayKey, TOTAL_SK, totalAttr } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import type { Cell } from './cover';
import { QueryError } from './errors';
import type { QueryRange } from './ranges';

/**
 * Distinct counts (UniqueVisitors) in queries: a count is the size of the union of the sketches that cover the
 * period, from the DynamoDB items the query read and the row's live sketches in Redis (read before DynamoDB, so
 * a sketch the writer moved in between is in one or the other; a sketch in both counts once: unions are
 * idempotent). Unions run in Redis (SketchStore.union), so "unique visitors today" is live.
 */

/** The metrics of a request that are distinct counts of the row's entity; a distinct metric of another entity is a QueryError. */
export function distinctMetricsOf(
  rules: CompiledRules,
  pk: string,
  metrics: ReadonlyArray<{ name: string; attr: string }>,
  field = 'metrics',
): Set<string> {
  const entity = rules.entityOfPk(pk);
  const own = new Set((entity ? rules.distinctOf(entity) : []).map((d) => d.attrMetric));
  const out = new Set<string>();
  for (const m of metrics) {
    const isDistinct = Object.values(rules.rules.entities).some((e) => Object.hasOwn(e.distinct, m.name));
    if (!isDistinct) continue;
    if (!own.has(m.attr))
      throw new QueryError(
        field,
        `${m.name} is not counted for entity ${entity ?? '?'}; the rules give it to ${entitiesWith(rules, m.name)}`,
      );
    out.add(m.attr);
  }
  return out;
}

function entitiesWith(rules: CompiledRules, metric: string): string {
  return Object.entries(rules.rules.entities)
    .filter(([, e]) => Object.hasOwn(e.distinct, metric))
    .map(([n]) => n)
    .join(', ');
}

/** One union to count: blobs from DynamoDB cells and live sketches. */
export type SketchGroup = Buffer[];

/** A cell's blobs: in its item and, once that spilled, in the overflow items on the attribute's path (read with it). */
const blobOf = (items: ReadonlyMap<string, StoredItem>, sk: string, attr: string): Buffer[] =>
  storedSketchesOf(items, sk, attr).map((b) => fromStoredSketch(b));

const liveIn = (live: readonly LiveSketch[], metric: string, from: string, to: string): Buffer[] =>
  live.filter((s) => s.metric === metric && s.dayKey >= from && s.dayKey <= to).map((s) => s.blob);

/** Groups of a series point: the period's cells plus the live sketches of its days (day keys `from` to `to`). */
export function pointGroup(
  items: ReadonlyMap<string, StoredItem>,
  live: readonly LiveSketch[],
  metric: string,
  point: { cells: readonly Cell[]; from: string; to: string },
): SketchGroup {
  return [...point.cells.flatMap((c) => blobOf(items, c.sk, c.attr(metric))), ...liveIn(live, metric, point.from, point.to)];
}

/** The group of a whole range: the cover's cells (or the all-time cell) plus the live sketches in the range. */
export function rangeGroup(
  items: ReadonlyMap<string, StoredItem>,
  live: readonly LiveSketch[],
  metric: string,
  range: QueryRange,
  cells: readonly Cell[],
): SketchGroup {
  if (range === 'all')
    return [...blobOf(items, TOTAL_SK, totalAttr(metric)), ...live.filter((s) => s.metric === metric).map((s) => s.blob)];
  return [...cells.flatMap((c) => blobOf(items, c.sk, c.attr(metric))), ...liveIn(live, metric, dayKey(range.from), dayKey(range.to))];
}
