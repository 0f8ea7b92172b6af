import { formatDate } from '@tally/key-layout';
import { readSeries, resolveRange, retainedRange } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { formatValues, parseEntity, parseMetrics } from './params';
import { seriesRouteSchema } from '@tally/contracts';

/**
 * GET /v1/series: one entity over a range. Day and month granularity read the range's month items with one
 * Query; year and all-time totals read the TOTAL item; granularity total over dates reads the coarsest items. A
 * visitor (a row of an entity whose key includes the visitor: its items expire) of a store that keeps (or kept) a
 * history limit has its range clamped to the first day kept and its year points summed from the kept month items.
 */
export const seriesRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  // entity=visitor&id=V9 is a natural guess: say that the id goes in entity.
  const unknownHint = (name: string, q: Record<string, unknown>) =>
    (name === 'id' || name === 'ids') && typeof q[name] === 'string'
      ? `the id goes in entity: entity=${typeof q['entity'] === 'string' ? q['entity'] : '<entity>'}:${q[name]}`
      : undefined;

  app.get('/series', { schema: seriesRouteSchema, config: { unknownHint } }, async (req) => {
    const principal = principalOf(req);
    const { store, timeZone } = principal;
    const q = req.query;
    const entityRaw = q.entity ?? 'store';
    const entity = parseEntity(rules, store, entityRaw);
    const metrics = parseMetrics(rules, entity.entity, q.metrics);
    // allTime has one granularity, so asking for it alone needs no granularity.
    const granularity = q.granularity ?? (q.range === 'allTime' ? 'total' : 'day');
    const now = ctx.now();
    const noRange = q.range === undefined && q.from === undefined && q.to === undefined;
    const { range: asked, name } = resolveRange(q, timeZone, now, granularity === 'total' && noRange ? 'allTime' : 'last30d');
    // A visitor's history (the rows of every entity keyed by the visitor, alone or with others) is counted only within
    // the store's retention (never from TOTAL, which holds expired months: years are summed from the months kept).
    const { range, yearsFromMonths } = retainedRange(rules, entity.entity, asked, principal, timeZone, now);
    const { points, totals, estimated, dynamoRequests } = await readSeries(ctx.query, {
      store,
      pk: entity.pk,
      metrics,
      range,
      granularity,
      yearsFromMonths,
    });
    return {
      store,
      timeZone,
      entity: entityRaw,
      granularity,
      range: name,
      from: range === 'all' ? null : formatDate(range.from),
      to: range === 'all' ? null : formatDate(range.to),
      metrics: metrics.map((m) => m.name),
      points: points.map((p) => ({ period: p.period, values: formatValues(rules, p.values), estimated: p.estimated })),
      totals: formatValues(rules, totals),
      estimated,
      asOf: new Date(now).toISOString(),
      dynamoRequests,
    };
  });
};
