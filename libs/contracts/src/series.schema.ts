import { z } from 'zod';
import { errorResponses, metricsParam, rangeAnswerFields, rangeParam, rangeParams, valuesFields } from './common.schema';

export const GRANULARITIES = ['day', 'month', 'year', 'total'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export const seriesQuerySchema = z
  .object({
    entity: z
      .string()
      .optional()
      .describe(
        '`store` (default), or `<entity>:<id>` such as product:P1 or visitor:V9; a page may be given by its path (page:/shop/shoes)',
      ),
    metrics: metricsParam.describe(
      "Comma-separated metric names, at most 50 different ones (keyed ones as ProductViews#P1), each one the entity counts (another is 400 naming metrics and listing what the entity counts); default: the entity's unkeyed metrics",
    ),
    range: rangeParam.describe(
      "today, yesterday, last7d, last30d (default), last3m, last12m, thisMonth, thisYear, or allTime (granularity year or total; the default for granularity total). For visitors of a store with a history limit, allTime and earlier dates are cut to the months kept (any granularity; a range wholly before them is 400 naming from), and the answer's from/to give the range so cut.",
    ),
    ...rangeParams,
    granularity: z
      .enum(GRANULARITIES)
      .optional()
      .describe(
        'day (default; total with range allTime): one point per day; month/year: one point per calendar month/year overlapping the range (whole periods; for a visitor of a store with a history limit a year is the sum of its months in the range, never months no longer kept); with allTime (unless cut to a history limit), year is one point per year from the first with counts to the last; total: one point for the range',
      ),
  })
  .strict();

export const seriesResponseSchema = z
  .object({
    ...rangeAnswerFields,
    entity: z.string().describe('The entity as asked, e.g. product:P1'),
    granularity: z.enum(GRANULARITIES),
    points: z.array(
      z.object({
        period: z.string().describe('2024-03-15 (day), 2024-03 (month), 2024 (year) or total'),
        ...valuesFields,
      }),
    ),
    totals: valuesFields.values.describe('Sum of the points; for UniqueVisitors the distinct visitors of all the points together'),
  })
  .meta({
    examples: [
      {
        store: 'DEMO',
        timeZone: 'Europe/Berlin',
        entity: 'product:P1',
        granularity: 'day',
        range: null,
        from: '2026-03-14',
        to: '2026-03-15',
        metrics: ['ViewCount', 'Revenue', 'UniqueVisitors'],
        points: [
          { period: '2026-03-14', values: { ViewCount: 12, Revenue: '19.99', UniqueVisitors: 5 } },
          { period: '2026-03-15', values: { ViewCount: 7, Revenue: '0', UniqueVisitors: 4 } },
        ],
        totals: { ViewCount: 19, Revenue: '19.99', UniqueVisitors: 8 },
        estimated: [],
        asOf: '2026-03-15T12:00:00.000Z',
        dynamoRequests: 1,
      },
    ],
  });

export const seriesRouteSchema = {
  operationId: 'getSeries',
  summary: 'A time series of one entity: DynamoDB rows plus exactly the counts still in Redis',
  tags: ['query'],
  querystring: seriesQuerySchema,
  response: { 200: seriesResponseSchema, ...errorResponses },
};
