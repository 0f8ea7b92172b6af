import { parseDayKey } from '@tally/key-layout';
import { idSchema, MEMBER_BYTES, normalizedEventSchema, storeIdSchema } from '@tally/schema';
import { z } from 'zod';
import { QUEUE, type QueueName } from './names';

/** Hard cap of events in one queued batch (the collector splits larger requests). */
export const MAX_EVENTS_PER_JOB = 5_000;

/**
 * A batch already rolled up by its sender (the collector, which knows the store's time zone and has the same rules):
 * per row, its pk, its number of fields, then (bucket field `<dayKey>|<metric>`, delta) pairs; a delta is a
 * positive safe integer or a decimal string of at most 38 digits. It is BucketStore.applyRows's argument as is.
 */
export type FlatRows = Array<string | number>;

const FIELD = /^\d{4}-\d{3}\|[^|]{1,512}$/;
const DELTA = /^[1-9]\d{0,37}$/;

/**
 * Checks a flat rows payload of `store`: its shape, every pk inside the store (`store` or `store#…`), every field
 * in the bucket layout with a day that exists (not `2023-366`, `2023-000`: the writer's calendar refuses those),
 * every delta a positive integer. Returns the number of rows, or the first problem.
 */
export const checkFlatRows = (store: string, rows: readonly unknown[]) =>
  checkFlat(store, 'rows', rows, (delta) =>
    (typeof delta === 'number' ? Number.isSafeInteger(delta) && delta > 0 : typeof delta === 'string' && DELTA.test(delta))
      ? undefined
      : 'not a positive integer delta',
  );

/**
 * A flat payload of `store` (`rows` or `distinct`): per row its pk, its number of fields n, then n (field, value)
 * pairs. Every pk inside the store, every field in the bucket layout with a day key that parseDayKey takes, every
 * value as `valueProblem` (which says what is wrong with it, if anything). Returns the number of rows, or the first
 * problem.
 */
function checkFlat(
  store: string,
  name: 'rows' | 'distinct',
  list: readonly unknown[],
  valueProblem: (value: unknown) => string | undefined,
): { rows: number } | { error: string } {
  const own = `${store}#`;
  const days = new Set<string>();
  let count = 0;
  let i = 0;
  while (i < list.length) {
    const pk = list[i];
    const n = list[i + 1];
    if (typeof pk !== 'string' || pk.length > 1024 || (pk !== store && !pk.startsWith(own)))
      return { error: `${name}.${i}: the row is not one of store ${store}` };
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || i + 2 + 2 * n > list.length)
      return { error: `${name}.${i + 1}: not a field count of this payload` };
    for (let j = i + 2; j < i + 2 + 2 * n; j += 2) {
      const field = list[j];
      if (typeof field !== 'string' || !FIELD.test(field))
        return { error: `${name}.${j}: not a ${name === 'rows' ? 'bucket' : 'sketch'} field (<day>|<metric>)` };
      const day = field.slice(0, 8);
      if (!days.has(day)) {
        try {
          parseDayKey(day);
        } catch (err) {
          return { error: `${name}.${j}: not a day: ${(err as Error).message}` };
        }
        days.add(day);
      }
      const problem = valueProblem(list[j + 1]);
      if (problem !== undefined) return { error: `${name}.${j + 1}: ${problem}` };
    }
    i += 2 + 2 * n;
    count++;
  }
  return count === 0 ? { error: `${name}: empty` } : { rows: count };
}

/**
 * The distinct-count members of a rolled-up batch (libs/schema flattenDistinct): per row, its pk, its number of
 * sketch fields, then (field `<dayKey>|<metric>`, members) pairs, the members one base64 string of 8-byte ids.
 */
export type FlatDistinct = Array<string | number>;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Checks a flat distinct payload of `store` whole, like checkFlatRows: every pk inside the store, every field in the
 * bucket layout, every members string base64 of one or more whole MEMBER_BYTES-byte ids. Returns the number of
 * rows, or the first problem.
 */
export const checkFlatDistinct = (store: string, distinct: readonly unknown[]) =>
  checkFlat(store, 'distinct', distinct, (members) => {
    if (typeof members !== 'string' || members.length === 0 || !BASE64.test(members)) return 'not base64 members';
    const bytes = (members.length / 4) * 3 - (members.endsWith('==') ? 2 : members.endsWith('=') ? 1 : 0);
    return bytes % MEMBER_BYTES === 0 ? undefined : `not whole ${MEMBER_BYTES}-byte member ids`;
  });

export const eventsJobSchema = z
  .object({
    /** Deduplication id of the batch: the aggregator applies a batch id at most once within the dedupe window. */
    batchId: idSchema,
    store: storeIdSchema,
    /** The validated events, rolled up by the aggregator in the store's time zone; or, instead, `rows` and `count`. */
    events: z.array(normalizedEventSchema).min(1).max(MAX_EVENTS_PER_JOB).optional(),
    /** The batch rolled up by the collector (FlatRows, checked whole by checkFlatRows). */
    rows: z.custom<FlatRows>((v) => Array.isArray(v), 'must be an array').optional(),
    /** With `rows`: the batch's distinct-count members (FlatDistinct, checked whole by checkFlatDistinct). */
    distinct: z.custom<FlatDistinct>((v) => Array.isArray(v), 'must be an array').optional(),
    /** The number of events `rows` sums. */
    count: z.number().int().min(1).max(MAX_EVENTS_PER_JOB).optional(),
    /** Epoch ms at which the batch was accepted. */
    receivedAt: z.number().int(),
    /** Where the batch came in: the collector's HTTP API or @tally/client. */
    source: z.enum(['http', 'client']).default('http'),
    /**
     * Set by the dlq tool's `replay --past-dedupe-window` only: apply the batch although it was accepted longer ago
     * than DEDUPE_WINDOW_SECONDS (the operator knows it was never applied).
     */
    pastDedupeWindow: z.literal(true).optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.events === undefined) === (p.rows === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['events'], message: 'a batch has either events or rows (with count)' });
    } else if (p.rows !== undefined) {
      if (p.count === undefined) ctx.addIssue({ code: 'custom', path: ['count'], message: 'is required with rows' });
      const r = checkFlatRows(p.store, p.rows);
      if ('error' in r) ctx.addIssue({ code: 'custom', path: ['rows'], message: r.error });
      if (p.distinct !== undefined) {
        const d = checkFlatDistinct(p.store, p.distinct);
        if ('error' in d) ctx.addIssue({ code: 'custom', path: ['distinct'], message: d.error });
      }
    } else {
      if (p.count !== undefined) ctx.addIssue({ code: 'custom', path: ['count'], message: 'goes only with rows' });
      if (p.distinct !== undefined) ctx.addIssue({ code: 'custom', path: ['distinct'], message: 'goes only with rows' });
    }
  });

export const sealJobSchema = z
  .object({
    /** The work-set shard this tick seals (one job scheduler per shard, so replicas share the shards). */
    shard: z.number().int().min(0).default(0),
  })
  .passthrough();

export const dynamoWriteJobSchema = z
  .object({
    store: storeIdSchema,
    /** Row (entity) pk whose outbox is flushed. */
    pk: z.string().min(1).max(1024),
    /** Set by earlier versions (always `'policy'` and `0`) and never read: accepted so their queued jobs still parse. */
    reason: z.literal('policy').optional(),
    waits: z.literal(0).optional(),
  })
  .strict();

/**
 * A job of the maintenance queue. One kind so far: `restamp-retention`, the restamp of a store's visitor items after
 * a change of its visitor-history retention (scheduleRetentionRestamp).
 */
export const maintenanceJobSchema = z
  .object({
    kind: z.literal('restamp-retention'),
    store: storeIdSchema,
    /** Epoch ms of the change of historyMonths the job follows (the tenant item records any later one). */
    changedAt: z.number().int().nonnegative(),
  })
  .strict();

/** Queue -> payload schema. `enqueue()` and every processor use it, so payloads are checked at compile and run time. */
export const payloadSchemas = {
  [QUEUE.events]: eventsJobSchema,
  [QUEUE.seal]: sealJobSchema,
  [QUEUE.dynamoWrites]: dynamoWriteJobSchema,
  [QUEUE.maintenance]: maintenanceJobSchema,
} as const satisfies Record<QueueName, z.ZodType>;

export type PayloadOf<Q extends QueueName> = z.input<(typeof payloadSchemas)[Q]>;
export type ParsedPayloadOf<Q extends QueueName> = z.output<(typeof payloadSchemas)[Q]>;
export type EventsJob = z.output<typeof eventsJobSchema>;
export type DynamoWriteJob = z.output<typeof dynamoWriteJobSchema>;

/**
 * When an events batch was first accepted: the earlier of its job's creation (`jobTimestamp`) and the payload's
 * `receivedAt`. Any application of the batch came after it, so the aggregator's dedupe record of the batch, and the
 * tombstones of a store deletion or visitor erasure made after it, last at least until this plus
 * DEDUPE_WINDOW_SECONDS: before then a redelivery is recognised and an erasure honoured, after it not.
 */
export function batchAcceptedAt(jobTimestamp: number, data: unknown): number {
  const receivedAt = (data as { receivedAt?: unknown } | undefined)?.receivedAt;
  return typeof receivedAt === 'number' && Number.isFinite(receivedAt) ? Math.min(jobTimestamp, receivedAt) : jobTimestamp;
}
