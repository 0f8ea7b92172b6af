import { z } from 'zod';
import { errorResponses, fromParam, isoSchema, metricsParam, rangeParam, storeParam, toParam, valuesSchema } from './common.schema';

export const totalsQuerySchema = z
  .object({
    entity: z.string().describe('Entity name: product, visitor, … (or store, without ids)'),
    ids: z
      .union([z.string(), z.array(z.string())])
      .optional()
      .describe('Comma-separated ids, at most MAX_ENTITIES_PER_REQUEST'),
    metrics: metricsParam.describe("Comma-separated metric names; default: the entity's unkeyed metrics"),
    range: rangeParam.describe('A named range (default last30d) or allTime'),
    from: fromParam,
    to: toParam,
    store: storeParam,
  })
  .strict();

export const totalsResponseSchema = z.object({
  store: z.string(),
  timeZone: z.string(),
  entity: z.string(),
  range: z.string().nullable(),
  from: z.string().nullable(),
  to: z.string().nullable(),
  metrics: z.array(z.string()),
  items: z.array(z.object({ id: z.string(), values: valuesSchema })).describe('One per id, in the order asked'),
  asOf: isoSchema,
  dynamoRequests: z.number().int(),
});

export const totalsRouteSchema = {
  summary: 'Totals over a range for many entities at once (batched reads, live data merged)',
  tags: ['query'],
  querystring: totalsQuerySchema,
  response: { 200: totalsResponseSchema, ...errorResponses },
};
