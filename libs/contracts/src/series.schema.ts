import { z } from 'zod';
import {
  errorResponses,
  fromParam,
  isoSchema,
  metricsParam,
  RANGE_NAMES,
  rangeParam,
  storeParam,
  toParam,
  valuesSchema,
} from './common.schema';

export const GRANULARITIES = ['day', 'month', 'year', 'total'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export const seriesQuerySchema = z
  .object({
    entity: z.string().optional().describe('`store` (default), or `<entity>:<id>` such as product:P1 or visitor:V9'),
    metrics: metricsParam.describe("Comma-separated metric names (keyed ones as ProductViews#P1); default: the entity's unkeyed metrics"),
    range: rangeParam.describe(
      'today, yesterday, last7d, last30d (default), last3m, last12m, thisMonth, thisYear, or allTime (granularity total only; the default for granularity total)',
    ),
    from: fromParam,
    to: toParam,
    granularity: z
      .enum(GRANULARITIES)
      .optional()
      .describe(
        'day (default): one point per day; month/year: one point per calendar month/year overlapping the range (whole periods); total: one point for the range',
      ),
    store: storeParam,
  })
  .strict();

export const seriesResponseSchema = z
  .object({
    store: z.string(),
    timeZone: z.string(),
    entity: z.string().describe('The entity as asked, e.g. product:P1'),
    granularity: z.enum(GRANULARITIES),
    range: z.enum(RANGE_NAMES).nullable().describe('The named range, or null for from/to'),
    from: z.string().nullable().describe('First day (YYYY-MM-DD); null for allTime'),
    to: z.string().nullable().describe('Last day (YYYY-MM-DD); null for allTime'),
    metrics: z.array(z.string()),
    points: z.array(
      z.object({
        period: z.string().describe('2024-03-15 (day), 2024-03 (month), 2024 (year) or total'),
        values: valuesSchema,
      }),
    ),
    totals: valuesSchema.describe('Sum of the points; for UniqueVisitors the distinct visitors of all the points together'),
    asOf: isoSchema.describe('When the answer was read: DynamoDB plus every count in Redis until then'),
    dynamoRequests: z.number().int().describe('DynamoDB requests made to answer'),
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
