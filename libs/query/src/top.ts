import { MAX_TOP_DAYS } from '@tally/contracts';
import { readTotals, resolveMetrics, dayKeysOf, type QueryDeps } from './engine';
import { QueryError } from './errors';
import type { DateRange, QueryRange } from './ranges';
import { checkMetricName, entityOf, rankedEntitiesOf } from './rules-introspection';

/** Candidates fetched from the rankings per item asked: rankings order by doubles, the answer by exact values. */
const CANDIDATES_PER_ITEM = 2;

export interface TopResult {
  /** The entity as the rules name it (`store` resolved). */
  entity: string;
  /** The dates ranked. */
  range: DateRange;
  /** Highest exact value first; ties by id. */
  items: Array<{ id: string; units: bigint }>;
  dynamoRequests: number;
}

/**
 * The highest entities by an unkeyed metric over at most MAX_TOP_DAYS days. The daily rankings, which the apply
 * step updates for every bucket (the open one included), give candidates; readTotals
 * gives their exact values (DynamoDB plus every count in Redis), which order the answer. So an entity counted a
 * moment ago, still in the open bucket, is in the list, and the list agrees with the totals at any moment.
 */
export async function readTop(
  deps: QueryDeps,
  req: { store: string; entity: string; metric: string; range: QueryRange; limit: number },
): Promise<TopResult> {
  const { rules } = deps;
  const { name: entity, spec } = entityOf(rules, req.entity, 'entity');
  if (!spec.rank)
    throw new QueryError('entity', `entity ${entity} keeps no rankings; ranked: ${rankedEntitiesOf(rules).join(', ') || 'none'}`);
  if (checkMetricName(rules, req.metric, 'metric').sub !== undefined) throw new QueryError('metric', 'rankings cover unkeyed metrics only');
  const [metric] = resolveMetrics(rules, [req.metric], 'metric');
  if (req.range === 'all') throw new QueryError('range', `top lists cover at most ${MAX_TOP_DAYS} days, not allTime`);
  const dayKeys = dayKeysOf(req.range);
  if (dayKeys.length > MAX_TOP_DAYS)
    throw new QueryError('range', `the range covers ${dayKeys.length} days; top lists cover at most ${MAX_TOP_DAYS}`);

  const candidates = await deps.buckets.top(req.store, entity, metric!.attr, dayKeys, req.limit * CANDIDATES_PER_ITEM);
  const ids = candidates.map((c) => c.member);
  if (ids.length === 0) return { entity, range: req.range, items: [], dynamoRequests: 0 };
  const exact = await readTotals(deps, {
    store: req.store,
    pks: ids.map((id) => rules.pkOf(req.store, entity, [id])),
    metrics: [metric!],
    range: req.range,
    costField: 'limit',
  });
  const items = exact.rows
    .map((row, i) => ({ id: ids[i]!, units: row.values[metric!.name]! }))
    .sort((a, b) => (a.units === b.units ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.units > b.units ? -1 : 1))
    .slice(0, req.limit);
  return { entity, range: req.range, items, dynamoRequests: exact.dynamoRequests };
}
