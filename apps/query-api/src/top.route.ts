import { formatDate } from '@tally/key-layout';
import { checkCountedMetric, entityOf, pathOfId, readTop, resolveRange, retainedRange } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { formatValue } from './params';
import { topRouteSchema } from '@tally/contracts';

/**
 * GET /v1/top: the highest entities by a metric over at most 92 days of the rankings kept (readTop), exact values. A
 * range whose rankings hold more than TOP_MAX_MEMBERS members in all is readTop's 400 naming from (narrow the range).
 */
export const topRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  app.get('/top', { schema: topRouteSchema }, async (req) => {
    const principal = principalOf(req);
    const { store, timeZone } = principal;
    const q = req.query;
    // A metric the entity does not count would rank nothing: 400. An entity without rankings is readTop's 400.
    const { name: entity, spec } = entityOf(rules, q.entity, 'entity');
    if (spec.rank) checkCountedMetric(rules, entity, q.metric, 'metric');
    const now = ctx.now();
    const { range: asked, name } = resolveRange(q, timeZone, now, 'last30d');
    // A ranked entity keyed by the visitor (alone or with another dimension: visitorKeyedEntities) under a history
    // limit (or after one): only the days kept are ranked and summed, as totals reads them (allTime stays readTop's
    // 400). No yearsFromMonths: a top list's range, at most MAX_TOP_DAYS days, never covers a whole year, so it never
    // reads a year cell of TOTAL.
    const range = asked === 'all' ? asked : retainedRange(rules, entity, asked, principal, timeZone, now).range;
    const top = await readTop(ctx.query, { store, entity: q.entity, metric: q.metric, range, limit: q.limit, timeZone, now });
    const scale = rules.scaleOf(q.metric);
    return {
      store,
      entity: top.entity,
      metric: q.metric,
      range: name,
      from: formatDate(top.range.from),
      to: formatDate(top.range.to),
      items: top.items.map((x) => {
        const path = pathOfId(rules, top.entity, x.id);
        return { id: x.id, ...(path === undefined ? {} : { path }), value: formatValue(x.units, scale) };
      }),
      asOf: new Date(now).toISOString(),
      dynamoRequests: top.dynamoRequests,
    };
  });
};
