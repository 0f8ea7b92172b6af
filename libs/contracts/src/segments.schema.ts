import { z } from 'zod';
import { bodyErrorResponses, errorResponses, isoSchema, RANGE_NAMES, valueSchema } from './common.schema';
import { storeQuerySchema } from './store.schema';

/** A metric's name as the rules give it (key-layout's NAME_PATTERN): no `#`, a keyed metric's key goes in `key`. */
const METRIC_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

export const segmentRuleSchema = z
  .object({
    metric: z
      .string()
      .min(1)
      .max(64)
      .regex(METRIC_NAME_PATTERN, {
        // ProductViews#P1 would be a keyed metric named with its key: the key goes in `key`.
        error: (iss) => {
          const hash = typeof iss.input === 'string' ? iss.input.indexOf('#') : -1;
          return hash < 0
            ? 'must be a metric name: a letter, then up to 63 of A-Z a-z 0-9 _'
            : `takes the metric's name alone (${JSON.stringify((iss.input as string).slice(0, hash))}); a keyed metric's key goes in key`;
        },
      })
      .describe(
        "A metric of the visitor's row, e.g. ViewCount, OrderCount, Revenue, ProductViews (its key in key); one visitors do not count (UniqueVisitors, PageViews in the default rules) is 400 listing what they count",
      ),
    key: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,128}$/)
      .optional()
      .describe('The key of a keyed metric (required for one, refused for others), e.g. the product of ProductViews'),
    range: z
      .enum(RANGE_NAMES)
      .describe("A named range in the store's time zone, or allTime; under a store's history limit only the months kept count"),
    op: z.enum(['>=', '>', '=', '<=', '<', '!=']).describe("How the visitor's value compares with value"),
    value: z.number().finite().describe("The number to compare with, in the metric's units (Revenue 100 = 100.00)"),
  })
  .strict();

export const segmentSchema = z
  .object({
    name: z.string().min(1).max(100).describe('A name for the answer, 1-100 characters'),
    match: z.enum(['all', 'any']).default('all').describe('all (default): every rule must match; any: at least one'),
    rules: z.array(segmentRuleSchema).min(1).max(50).describe('1-50 rules'),
  })
  .strict();

export type SegmentRule = z.infer<typeof segmentRuleSchema>;
export type Segment = z.infer<typeof segmentSchema>;

export const MAX_SEGMENTS_PER_REQUEST = 20;

export const segmentsBodySchema = z
  .object({
    visitor: z.string().describe('Visitor id'),
    segments: z.array(segmentSchema).min(1).max(MAX_SEGMENTS_PER_REQUEST).describe(`1-${MAX_SEGMENTS_PER_REQUEST} segments`),
  })
  .strict()
  .meta({
    examples: [
      {
        visitor: 'V42',
        segments: [
          { name: 'big spender', match: 'all', rules: [{ metric: 'Revenue', range: 'last30d', op: '>=', value: 100 }] },
          { name: 'fan of P1', match: 'any', rules: [{ metric: 'ProductViews', key: 'P1', range: 'allTime', op: '>', value: 3 }] },
        ],
      },
    ],
  });

export const segmentsResponseSchema = z
  .object({
    visitor: z.string(),
    segments: z.array(
      z.object({
        name: z.string(),
        matched: z.boolean(),
        rules: z.array(
          z
            .object({
              metric: z.string(),
              key: z.string().optional(),
              range: z.enum(RANGE_NAMES),
              op: segmentRuleSchema.shape.op,
              value: z.number(),
              actual: valueSchema.describe("The visitor's value: a number for counts, a decimal string for scaled metrics"),
              matched: z.boolean(),
            })
            .describe('The rule as asked, with the actual value and whether it matched'),
        ),
      }),
    ),
    cache: z.enum(['hit', 'miss']).describe("Whether the visitor's DynamoDB history came from the session cache"),
    asOf: isoSchema.describe("When the answer was read: the visitor's DynamoDB history plus every count in Redis until then"),
    dynamoRequests: z.number().int().describe('DynamoDB requests made to answer (0 when the history came from the cache)'),
  })
  .meta({
    examples: [
      {
        visitor: 'V42',
        segments: [
          {
            name: 'big spender',
            matched: true,
            rules: [{ metric: 'Revenue', range: 'last30d', op: '>=', value: 100, actual: '129.98', matched: true }],
          },
        ],
        cache: 'hit',
        asOf: '2026-03-15T12:00:00.000Z',
        dynamoRequests: 0,
      },
    ],
  });

export const segmentsRouteSchema = {
  operationId: 'evaluateSegments',
  summary: "Evaluates segment rules on one visitor's counts (history cached for the session, live data merged)",
  tags: ['segments'],
  querystring: storeQuerySchema,
  body: segmentsBodySchema,
  response: { 200: segmentsResponseSchema, ...errorResponses, ...bodyErrorResponses },
};
