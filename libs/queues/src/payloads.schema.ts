import { idSchema, normalizedEventSchema, storeIdSchema } from '@tally/schema';
import { z } from 'zod';
import { QUEUE, type QueueName } from './names';

/** Hard cap of events in one queued batch (the collector splits larger requests). */
export const MAX_EVENTS_PER_JOB = 5_000;

export const eventsJobSchema = z
  .object({
    /** Deduplication id of the batch: the aggregator applies a batch id at most once within the dedupe window. */
    batchId: idSchema,
    store: storeIdSchema,
    events: z.array(normalizedEventSchema).min(1).max(MAX_EVENTS_PER_JOB),
    /** Epoch ms at which the batch was accepted. */
    receivedAt: z.number().int(),
    /** Where the batch came in: the collector's HTTP API or @tally/client. */
    source: z.enum(['http', 'client']).default('http'),
  })
  .strict();

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

/** Queue -> payload schema. `enqueue()` and every processor use it, so payloads are checked at compile and run time. */
export const payloadSchemas = {
  [QUEUE.events]: eventsJobSchema,
  [QUEUE.seal]: sealJobSchema,
  [QUEUE.dynamoWrites]: dynamoWriteJobSchema,
} as const satisfies Record<QueueName, z.ZodType>;

export type PayloadOf<Q extends QueueName> = z.input<(typeof payloadSchemas)[Q]>;
export type ParsedPayloadOf<Q extends QueueName> = z.output<(typeof payloadSchemas)[Q]>;
export type EventsJob = z.output<typeof eventsJobSchema>;
export type DynamoWriteJob = z.output<typeof dynamoWriteJobSchema>;
