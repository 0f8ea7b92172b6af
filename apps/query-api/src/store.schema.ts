import { z } from 'zod';
import { errorResponses, isoSchema, storeParam } from './common.schema';

export const storeQuerySchema = z.object({ store: storeParam }).strict();

export const storeResponseSchema = z
  .object({
    store: z.string().describe("The API key's store"),
    timeZone: z.string().describe('IANA time zone in which days, months and years are binned'),
    now: isoSchema.describe('Server time'),
    today: z.string().describe("Today in the store's time zone, YYYY-MM-DD"),
    metrics: z.array(
      z.object({
        name: z.string(),
        scale: z.number().int().describe('Decimal places: 0 = a count (JSON number), 2 = minor currency units (decimal string)'),
        description: z.string(),
        keyedBy: z.string().nullable().describe('Dimension the metric is keyed by (ask for ProductViews#<product>), or null'),
      }),
    ),
    entities: z.array(z.string()).describe('Entity names: store, product, visitor, …'),
  })
  .describe('The store of the API key and what can be asked about it');

export const storeRouteSchema = {
  summary: "The API key's store: time zone, today, metrics and entities",
  tags: ['store'],
  querystring: storeQuerySchema,
  response: { 200: storeResponseSchema, ...errorResponses },
};
