import { segmentSchema } from '@tally/query';
import { z } from 'zod';
import { errorResponses, storeParam, valueSchema } from './common.schema';

export const MAX_SEGMENTS_PER_REQUEST = 20;

export const segmentsQuerySchema = z.object({ store: storeParam }).strict();

export const segmentsBodySchema = z
  .object({
    visitor: z.string().describe('Visitor id'),
    segments: z.array(segmentSchema).min(1).max(MAX_SEGMENTS_PER_REQUEST),
  })
  .strict();

export const segmentsResponseSchema = z.object({
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
            range: z.string(),
            op: z.string(),
            value: z.number(),
            actual: valueSchema.describe("The visitor's value: a number for counts, a decimal string for scaled metrics"),
            matched: z.boolean(),
          })
          .describe('The rule as asked, with the actual value and whether it matched'),
      ),
    }),
  ),
  cache: z.enum(['hit', 'miss']).describe("Whether the visitor's DynamoDB history came from the session cache"),
  asOf: z.string(),
  dynamoRequests: z.number().int(),
});

export const segmentsRouteSchema = {
  summary: "Evaluates segment rules on one visitor's counts (history cached for the session, live data merged)",
  tags: ['segments'],
  querystring: segmentsQuerySchema,
  body: segmentsBodySchema,
  response: { 200: segmentsResponseSchema, ...errorResponses },
};
