import { ID_PATTERN, STORE_ID_PATTERN } from '@tally/key-layout';
import { z } from 'zod';

export const idSchema = z.string().regex(ID_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 _ . : -');
export const storeIdSchema = z
  .string()
  .regex(STORE_ID_PATTERN, 'must be 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit');

/** An event as clients send it (docs/DESIGN.md "Event"). Semantic checks against the rules follow in validateEvents. */
export const eventInputSchema = z
  .object({
    type: z
      .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
      .min(1, 'is required')
      .max(64),
    ts: z.union([z.string().min(1).max(64), z.number()], {
      error: (issue) =>
        issue.input === undefined
          ? 'is required'
          : 'must be an ISO-8601 timestamp with a zone (e.g. 2023-05-03T10:15:00Z) or epoch milliseconds',
    }),
    id: idSchema.optional(),
    dims: z.record(z.string().max(64), z.string().max(1024)).default({}),
    // JSON.parse turns 1e309 into Infinity, which z.number() refuses: say so rather than "Invalid input".
    value: z
      .union([z.number(), z.string().max(64)], { error: 'must be a finite number or a decimal string of at most 64 characters' })
      .optional(),
  })
  .strict();

export type EventInput = z.input<typeof eventInputSchema>;

/** An event after validation: ts in epoch ms, value as the canonical decimal string. */
export const normalizedEventSchema = z
  .object({
    type: z.string().min(1).max(64),
    ts: z.number().int(),
    id: idSchema.optional(),
    dims: z.record(z.string(), idSchema),
    value: z.string().max(64).optional(),
  })
  .strict();

export type NormalizedEvent = z.infer<typeof normalizedEventSchema>;
