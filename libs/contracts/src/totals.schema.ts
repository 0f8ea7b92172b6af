import { z } from 'zod';
import { errorResponses, metricsParam, rangeAnswerFields, rangeParam, rangeParams, valuesFields } from './common.schema';

export const totalsQuerySchema = z
  .object({
    entity: z.string().describe('Entity name: product, visitor, … (or store, without ids)'),
    ids: z
      .union([z.string(), z.array(z.string())])
      .optional()
      .describe(
        'Comma-separated ids (ids=P1,P2), in one ids parameter or several (ids=P1&ids=P2), at most MAX_ENTITIES_PER_REQUEST (default 100) different ones. A page may be given by its path, one path per ids parameter (ids=/shop/shoes&ids=/blog): a path may hold commas, so ids=/shop/a,b is the one page /shop/a,b (page keys, which hold none, may still be comma-separated)',
      ),
    metrics: metricsParam.describe(
      "Comma-separated metric names, at most 50 different ones, each one the entity counts (another is 400 naming metrics and listing what the entity counts); default: the entity's unkeyed metrics",
    ),
    range: rangeParam.describe(
      "A named range (default last30d) or allTime. For visitors of a store with a history limit, allTime and earlier dates are cut to the months kept (a range wholly before them is 400 naming from), and the answer's from/to give the range so cut.",
    ),
    ...rangeParams,
  })
  .strict();

export const totalsResponseSchema = z
  .object({
    ...rangeAnswerFields,
    entity: z.string(),
    items: z
      .array(z.object({ id: z.string(), ...valuesFields }))
      .describe('One per id, in the order asked; a repeated id is answered once, where it is first asked'),
  })
  .meta({
    examples: [
      {
        store: 'DEMO',
        timeZone: 'UTC',
        entity: 'product',
        range: 'allTime',
        from: null,
        to: null,
        metrics: ['ViewCount', 'UniqueVisitors'],
        items: [
          { id: 'P1', values: { ViewCount: 1200, UniqueVisitors: 431 } },
          { id: 'P2', values: { ViewCount: 85, UniqueVisitors: 62 } },
        ],
        estimated: [],
        asOf: '2026-03-15T12:00:00.000Z',
        dynamoRequests: 1,
      },
    ],
  });

export const totalsRouteSchema = {
  operationId: 'getTotals',
  description:
    'Long ranges read the coarsest items that cover them (whole years from the TOTAL item, whole months from their month attributes). A query that would read more DynamoDB items than MAX_ITEMS_PER_QUERY answers 400.',
  summary: 'Totals over a range for many entities at once (batched reads, live data merged)',
  tags: ['query'],
  querystring: totalsQuerySchema,
  response: { 200: totalsResponseSchema, ...errorResponses },
};
