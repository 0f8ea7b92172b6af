import { NAME_PATTERN } from '@tally/key-layout';
import { z } from 'zod';

/**
 * Not a property every object inherits (`constructor`, `toString`, `valueOf`…): compiled rules and the events
 * index objects by these names, and an inherited one would be found where the rules define none.
 */
const notInherited = (s: string) => !(s in Object.prototype);
const INHERITED = {
  error: (issue: { input: unknown }) => `${JSON.stringify(issue.input)} is a property of every JavaScript object: choose another name`,
};

const name = z.string().regex(NAME_PATTERN, 'a name: a letter, then letters, digits or _ (max 64)').refine(notInherited, INHERITED);

/**
 * When a row's unwritten counts are written to DynamoDB. Freshness comes from the query merge, so this is a
 * cost knob only.
 *  - bucket: after every sealed bucket (the article's 15-minute flush)
 *  - every:  at most once per `minutes`, aligned to UTC multiples of it (1440 = once a day); with `spread`, at a
 *            phase of each store's own within the interval (flushPhaseMs), so many stores' rows do not all fall
 *            due at the same instant
 *  - idle:   once the entity has been idle `idleMinutes` (a visitor's session ended), or `maxAgeMinutes`
 *            after its oldest unwritten count, whichever comes first
 */
export const flushPolicySchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('bucket') }).strict(),
  z
    .object({
      kind: z.literal('every'),
      minutes: z.number().int().min(1).max(10_080),
      // false is the same policy as absent, and leaves the rules fingerprint as absent does.
      spread: z
        .boolean()
        .optional()
        .transform((v) => v || undefined),
    })
    .strict(),
  z
    .object({
      kind: z.literal('idle'),
      idleMinutes: z.number().int().min(1).max(1_440),
      maxAgeMinutes: z.number().int().min(1).max(10_080),
    })
    .strict(),
]);

export const metricSchema = z
  .object({
    /** Short attribute code written to DynamoDB instead of the name (smaller items, cheaper writes). */
    code: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]{0,15}$/, 'a short code: a letter, then up to 15 letters, digits or _')
      .refine(notInherited, INHERITED)
      .optional(),
    /** Decimal places kept for sums (2 = minor currency units). Values with more decimals are refused. */
    scale: z.number().int().min(0).max(6).default(0),
    description: z.string().max(200).optional(),
  })
  .strict();

export const entitySchema = z
  .object({
    /**
     * Dimensions whose values identify the entity (at most 4; the row's pk is `store#entity#v1#v2…`); empty = the
     * store row itself. Only that entity may be named `store` (queries take `store` for the store row).
     */
    key: z.array(name).max(4).default([]),
    flush: flushPolicySchema,
    /** Keep daily rankings of this entity's counts (for top lists); single-dimension keys only. */
    rank: z.boolean().default(false),
    /**
     * Distinct-count metrics of the entity's rows: metric name -> the dimension counted (`UniqueVisitors: visitor`).
     * Every event counted on a row of the entity with that dimension present adds the dimension's value to the
     * row's per-day sketch (exact below a threshold, HyperLogLog above; docs/DESIGN.md "Unique visitors").
     */
    distinct: z.record(name, name).default({}),
  })
  .strict();

export const counterSchema = z
  .object({
    entity: name,
    metric: name,
    /** count adds 1 per event; sum adds the event's value. */
    op: z.enum(['count', 'sum']).default('count'),
    /** A dimension that sub-keys the metric inside the entity's row (`ProductViews#P1`). */
    by: name.optional(),
  })
  .strict();

export const eventTypeSchema = z
  .object({
    dims: z.record(name, z.enum(['required', 'optional'])).default({}),
    value: z.enum(['required', 'optional', 'forbidden']).default('forbidden'),
    /**
     * A counter whose entity key or `by` dimension is an absent optional dimension is skipped. Each (entity, metric,
     * by) at most once; the type's sum counters share one scale (the decimals its `value` may have).
     */
    counters: z.array(counterSchema).min(1),
  })
  .strict();

/**
 * How a dimension's values are written: `id` (the default) takes ids as they are (1-128 characters of A-Z a-z 0-9
 * _ . : -); `path` takes a URL path (`/shop/shoes/red`: a `/`, then up to 96 bytes in all of any characters but
 * whitespace, controls, `?` and `#`) and keys it by its base64url encoding (key-layout encodeKeyValue), decoded
 * in answers.
 */
export const dimensionSchema = z.object({ format: z.enum(['id', 'path']).default('id') }).strict();

export const rulesSchema = z
  .object({
    metrics: z.record(name, metricSchema),
    entities: z.record(name, entitySchema),
    /** Dimensions whose values are not plain ids (see dimensionSchema); any other dimension is an id. */
    dimensions: z.record(name, dimensionSchema).default({}),
    events: z.record(
      z
        .string()
        .regex(/^[a-z][a-z0-9_]{0,63}$/, 'an event type: lower-case letters, digits, _')
        .refine(notInherited, INHERITED),
      eventTypeSchema,
    ),
  })
  .strict();

export type FlushPolicy = z.infer<typeof flushPolicySchema>;
export type RulesInput = z.input<typeof rulesSchema>;
export type Rules = z.infer<typeof rulesSchema>;
export type Counter = z.infer<typeof counterSchema>;
export type DimensionFormat = z.infer<typeof dimensionSchema>['format'];
