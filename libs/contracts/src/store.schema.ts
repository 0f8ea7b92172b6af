import { z } from 'zod';
import { errorResponses, isoSchema, storeParam } from './common.schema';

export const storeQuerySchema = z.object({ store: storeParam }).strict();

export const storeResponseSchema = z
  .object({
    store: z.string().describe("The API key's store"),
    timeZone: z.string().describe('IANA time zone in which days, months and years are binned'),
    now: isoSchema.describe('Server time'),
    today: z.string().describe("Today in the store's time zone, YYYY-MM-DD"),
    currency: z.string().nullable().describe('ISO 4217 code the store shows revenue in (tenants set-currency), or null when none is set'),
    metrics: z.array(
      z.object({
        name: z.string(),
        scale: z.number().int().describe('Decimal places: 0 = a count (JSON number), 2 = minor currency units (decimal string)'),
        description: z.string(),
        keyedBy: z.string().nullable().describe('Dimension the metric is keyed by (ask for ProductViews#<product>), or null'),
        countedOn: z
          .array(z.string())
          .describe('The entities whose rows count it (the store row as store): asked for another entity, it is refused with a 400'),
        distinctOn: z
          .array(z.string())
          .optional()
          .describe(
            'Only for a distinct count such as UniqueVisitors: the entities that have it (store, product); its values are distinct counts, never sums',
          ),
      }),
    ),
    entities: z.array(z.string()).describe('Entity names: store, product, visitor, …'),
  })
  .describe('The store of the API key and what can be asked about it')
  .meta({
    examples: [
      {
        store: 'DEMO',
        timeZone: 'Europe/Berlin',
        now: '2026-03-15T12:00:00.000Z',
        today: '2026-03-15',
        currency: 'EUR',
        metrics: [
          { name: 'ViewCount', scale: 0, description: 'product views', keyedBy: null, countedOn: ['store', 'product', 'visitor'] },
          { name: 'Revenue', scale: 2, description: 'order revenue', keyedBy: null, countedOn: ['store', 'product', 'visitor'] },
          { name: 'ProductViews', scale: 0, description: 'views per product', keyedBy: 'product', countedOn: ['visitor'] },
          {
            name: 'UniqueVisitors',
            scale: 0,
            description: 'distinct visitors',
            keyedBy: null,
            countedOn: ['store', 'product'],
            distinctOn: ['store', 'product'],
          },
        ],
        entities: ['store', 'product', 'visitor', 'page'],
      },
    ],
  });

export const storeRouteSchema = {
  operationId: 'getStore',
  summary: "The API key's store: time zone, today, metrics and entities",
  tags: ['store'],
  querystring: storeQuerySchema,
  response: { 200: storeResponseSchema, ...errorResponses },
};
