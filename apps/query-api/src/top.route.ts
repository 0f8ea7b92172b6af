import { formatDate, NAME_PATTERN } from '@tally/key-layout';
import { dayKeysOf, readTotals, resolveMetrics } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { badRequest, principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { checkMetricName, formatValue, resolveRange, storeEntityOf } from './params';
import { MAX_TOP_DAYS, topRouteSchema } from './top.schema';

/** Candidates fetched from the rankings per item asked, so counts folded since can still reorder them. */
const CANDIDATES_PER_ITEM = 2;

/**
 * GET /v1/top: the highest entities by a metric over at most 92 days. The daily rankings (updated at each fold)
 * give candidates; readTotals gives their exact values (DynamoDB plus every count in Redis), which order the answer.
 */
export const topRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  app.get('/top', { schema: topRouteSchema }, async (req) => {
    const { store, timeZone } = principalOf(req);
    const q = req.query;
    const entity = q.entity === 'store' ? (storeEntityOf(rules) ?? 'store') : q.entity;
    if (!NAME_PATTERN.test(entity) || !Object.hasOwn(rules.rules.entities, entity)) {
      throw badRequest('entity', `unknown entity ${JSON.stringify(q.entity)}; known: ${Object.keys(rules.rules.entities).join(', ')}`);
    }
    const ranked = Object.entries(rules.rules.entities).filter(([, s]) => s.rank).map(([n]) => n);
    if (!rules.rules.entities[entity]!.rank) {
      throw badRequest('entity', `entity ${entity} keeps no rankings; ranked: ${ranked.join(', ') || 'none'}`);
    }
    const { sub } = checkMetricName(rules, q.metric, 'metric');
    if (sub !== undefined) throw badRequest('metric', 'rankings cover unkeyed metrics only');
    const [metric] = resolveMetrics(rules, [q.metric]);
    const now = ctx.now();
    const { range, name } = resolveRange(q, timeZone, now, 'last30d');
    if (range === 'all') throw badRequest('range', `top lists cover at most ${MAX_TOP_DAYS} days, not allTime`);
    const dayKeys = dayKeysOf(range);
    if (dayKeys.length > MAX_TOP_DAYS) throw badRequest('range', `the range covers ${dayKeys.length} days; top lists cover at most ${MAX_TOP_DAYS}`);

    const candidates = await ctx.query.buckets.top(store, entity, metric!.attr, dayKeys, q.limit * CANDIDATES_PER_ITEM);
    const ids = candidates.map((c) => c.member);
    const exact = ids.length
      ? await readTotals(ctx.query, { store, pks: ids.map((id) => rules.pkOf(store, entity, [id])), metrics: [metric!], range })
      : { rows: [], dynamoRequests: 0 };
    const scale = rules.scaleOf(q.metric);
    const items = exact.rows
      .map((row, i) => ({ id: ids[i]!, units: row.values[metric!.name]! }))
      .sort((a, b) => (a.units === b.units ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.units > b.units ? -1 : 1))
      .slice(0, q.limit)
      .map((x) => ({ id: x.id, value: formatValue(x.units, scale) }));
    return {
      store,
      entity,
      metric: q.metric,
      range: name,
      from: formatDate(range.from),
      to: formatDate(range.to),
      items,
      asOf: new Date(now).toISOString(),
      dynamoRequests: exact.dynamoRequests,
    };
  });
};
