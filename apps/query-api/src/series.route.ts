import { formatDate } from '@tally/key-layout';
import { readSeries, type SeriesPoint } from '@tally/query';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { badRequest, principalOf } from '@tally/http';
import type { RouteContext } from './deps';
import { formatValues, parseEntity, parseMetrics, plainMetricsOf, resolveRange } from './params';
import { seriesRouteSchema } from './series.schema';

/**
 * GET /v1/series: one entity over a range. Day and month granularity read the range's month items with one
 * Query; year and all-time totals read the TOTAL item; granularity total over a bounded range sums its days.
 */
export const seriesRoutes: FastifyPluginAsyncZod<{ ctx: RouteContext }> = async (app, { ctx }) => {
  const { rules } = ctx.query;

  app.get('/series', { schema: seriesRouteSchema }, async (req) => {
    const { store, timeZone } = principalOf(req);
    const q = req.query;
    const entityRaw = q.entity ?? 'store';
    const entity = parseEntity(rules, store, entityRaw);
    const metrics = parseMetrics(rules, q.metrics, () => plainMetricsOf(rules, entity.entity));
    const granularity = q.granularity ?? 'day';
    const now = ctx.now();
    const noRange = q.range === undefined && q.from === undefined && q.to === undefined;
    const { range, name } = resolveRange(q, timeZone, now, granularity === 'total' && noRange ? 'allTime' : 'last30d');

    let points: SeriesPoint[];
    let totals: Record<string, bigint>;
    let dynamoRequests: number;
    if (range === 'all') {
      if (granularity !== 'total') throw badRequest('granularity', `range allTime answers granularity total only, not ${granularity}`);
      // The TOTAL item holds the all-time value: the range only has to be a valid one.
      const r = await readSeries(ctx.query, { store, pk: entity.pk, metrics, range: { from: epochDay, to: epochDay }, granularity: 'total' });
      ({ points, totals, dynamoRequests } = r);
    } else if (granularity === 'total') {
      const r = await readSeries(ctx.query, { store, pk: entity.pk, metrics, range, granularity: 'day' });
      points = [{ period: 'total', values: r.totals }];
      ({ totals, dynamoRequests } = r);
    } else {
      ({ points, totals, dynamoRequests } = await readSeries(ctx.query, { store, pk: entity.pk, metrics, range, granularity }));
    }
    return {
      store,
      timeZone,
      entity: entityRaw,
      granularity,
      range: name,
      from: range === 'all' ? null : formatDate(range.from),
      to: range === 'all' ? null : formatDate(range.to),
      metrics: metrics.map((m) => m.name),
      points: points.map((p) => ({ period: p.period, values: formatValues(rules, p.values) })),
      totals: formatValues(rules, totals),
      asOf: new Date(now).toISOString(),
      dynamoRequests,
    };
  });
};

const epochDay = { year: 1970, month: 1, day: 1, doy: 1 };
