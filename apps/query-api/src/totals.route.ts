import { formatDate } from '@tally/key-layout';
import { readTotals, resolveRange, retainedRange } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { formatValues, parseEntityIds, parseMetrics } from './params';
import { totalsRouteSchema } from '@tally/contracts';

/** GET /v1/totals: totals over a range (or all time) of many entities with one Redis snapshot and batched reads. */
export const totalsRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  app.get('/totals', { schema: totalsRouteSchema }, async (req) => {
    const principal = principalOf(req);
    const { store, timeZone } = principal;
    const q = req.query;
    const refs = parseEntityIds(rules, store, q.entity, q.ids, ctx.limits.maxEntitiesPerRequest);
    const entity = refs[0]!.entity;
    const metrics = parseMetrics(rules, entity, q.metrics);
    const now = ctx.now();
    const { range: asked, name } = resolveRange(q, timeZone, now, 'last30d');
    // A visitor's history (the rows of every entity keyed by the visitor, alone or with others) is counted only from
    // the first day the store keeps, whole years from the kept month items, never TOTAL's year cells, which still hold
    // months the store no longer keeps (as series by year and segments).
    const { range, yearsFromMonths } = retainedRange(rules, entity, asked, principal, timeZone, now);
    const r = await readTotals(ctx.query, { store, pks: refs.map((x) => x.pk), metrics, range, yearsFromMonths });
    return {
      store,
      timeZone,
      entity,
      range: name,
      from: range === 'all' ? null : formatDate(range.from),
      to: range === 'all' ? null : formatDate(range.to),
      metrics: metrics.map((m) => m.name),
      items: r.rows.map((row, i) => ({ id: refs[i]!.id, values: formatValues(rules, row.values), estimated: row.estimated })),
      estimated: r.estimated,
      asOf: new Date(now).toISOString(),
      dynamoRequests: r.dynamoRequests,
    };
  });
};
