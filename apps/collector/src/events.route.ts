import { IdempotencyConflictError, QueueUnavailableError, type EnqueueResult, type Intake } from '@tally/intake';
import { ReplicasBehindError } from '@tally/queues';
import { bearerAuth, HttpProblem, listedErrors, MAX_LISTED_ERRORS, PROBLEM_SCHEMA, timesGiven, type TallyHttpApp } from '@tally/http';
import { eventInputSchema, type EventError, type ValidationResult } from '@tally/schema';
import { validatorCompiler } from 'fastify-type-provider-zod';
import type { TenantDirectory } from '@tally/tenants';
import type { FastifyRequest, FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import { REDIS_DOWN_RETRY_AFTER_SECONDS, type Backpressure } from './backpressure';
import { JSON_TYPE, NDJSON_TYPE, type EventsBody } from './body';
import type { IngestBudget } from './ingest-budget';
import { rejectReason, type CollectorMetrics } from './metrics';

export interface EventsRouteDeps {
  intake: Intake;
  directory: TenantDirectory;
  backpressure: Backpressure;
  metrics: CollectorMetrics;
  budget?: IngestBudget;
}

const DESCRIPTION = `
Takes a batch of events for the store of the API key (scope \`ingest\`; the store never comes from the body).

Body: a JSON array of events (\`Content-Type: ${JSON_TYPE}\`) or NDJSON, one event per line (\`${NDJSON_TYPE}\`),
at least 1 event: a batch with none (\`[]\`, or NDJSON with no lines) is refused with 400 \`TALLY_ERR_MALFORMED_BODY\`.
At most MAX_EVENTS_PER_REQUEST events (default 1000) and MAX_BODY_BYTES (default 1 MiB, counted after decompression:
bodies sent with \`Content-Encoding: gzip\` or \`br\` are taken).
An event is \`{ "type", "ts", "id"?, "dims"?, "value"? }\` (docs/DESIGN.md "Event"); each is checked against the rollup
rules: known type; declared and well-formed dims, at most 64 (ids \`[A-Za-z0-9_.:-]{1,128}\`; a path-format dimension
such as page takes a URL path: \`/\`, then no spaces, \`?\` or \`#\`, at most 96 bytes); ts parseable and within
CLOCK_SKEW_SECONDS (default 300) in the future and LATENESS_HORIZON_DAYS (default 35) in the past; value finite, not
negative, at most 1e12 and with no more decimals than the metric keeps.

**All or nothing by default:** if any event is invalid, the request is refused with 400 and nothing is counted; its
\`errors\` hold the first ${MAX_LISTED_ERRORS} errors, one entry per error (index, field, reason; an event may have several), and
\`errorCount\` gives the total when there are more. **With \`?partial=true\`** the valid events are accepted (202) and
the answer lists their \`acceptedIndexes\` and the \`errors\` of the rest (the first ${MAX_LISTED_ERRORS}, with \`errorCount\` when
there are more); if none is valid the answer is 400. Nothing accepted is lost; nothing refused is counted.

202 is sent only once Redis holds the batch. With an \`Idempotency-Key\` header the batch id derives from the
store and the key, so a retried request is counted once: BullMQ keeps the job id while the job is retained, and
the aggregator ignores a batch id it applied within DEDUPE_WINDOW_SECONDS (default 24 h). The key is bound to its
batch: reusing it within two such windows for other events (partial: the refused ones too) is refused with 422
naming the key, and nothing is accepted; so is reusing a key whose batch is in the events queue's failed set (the aggregator refused it: replay it
with the dlq tool, or use a new key). A retry is validated at the time the key's request was: a retry of an accepted
request is answered as it was (202, its batch id; partial: the same accepted events) even when some of its events have
passed LATENESS_HORIZON_DAYS or come within CLOCK_SKEW_SECONDS since.

413 over MAX_BODY_BYTES or MAX_EVENTS_PER_REQUEST; 415 for other content types or a Content-Encoding other than gzip
or br; 401 without a valid key, 403 without the ingest scope; 429 while the store is over its ingest budget
(\`TALLY_ERR_RATE_LIMITED\`; Retry-After: the seconds until the budget takes the batch) or the store's shard of the
events queue is deeper than MAX_QUEUE_DEPTH (\`TALLY_ERR_BACKPRESSURE\`; Retry-After: 2); 503 while Redis or the key
store cannot be reached (Retry-After: 5) or the collector is shutting down (Retry-After: 1); a 503 for a batch Redis may have taken (it did
not answer in time) names in \`idempotencyKey\` the key a request without one was given, to retry with (and the
same events: the key is bound to them). With
REDIS_WAIT_REPLICAS, 202 waits until that
many Redis replicas hold the batch too; fewer within REDIS_WAIT_TIMEOUT_MS is 503 \`TALLY_ERR_REDIS_REPLICAS_BEHIND\`
with Retry-After: 5 (Redis holds the batch: retry with the same Idempotency-Key, which counts it once; a request
without one was given one, named in the answer's \`idempotencyKey\`).
`.trim();

const eventError = z
  .object({ index: z.number().int(), field: z.string(), reason: z.string() })
  .describe('One error of one event (an event may have several)');
const problem = PROBLEM_SCHEMA.meta({
  examples: [
    {
      type: 'about:blank',
      title: 'Unauthorized',
      status: 401,
      code: 'TALLY_ERR_UNAUTHORIZED',
      detail: 'missing API key: send Authorization: Bearer <key>',
    },
  ],
});

const EXAMPLE_EVENTS = [
  { type: 'view', ts: '2026-03-15T10:15:00Z', dims: { product: 'P1', visitor: 'V42' } },
  { type: 'order', ts: 1773569700000, id: 'O-1001', dims: { visitor: 'V42' }, value: '19.99' },
];

/** One event, as the zod schema the intake parses it with. */
const eventSchema = eventInputSchema
  .describe('An event; checked against the rollup rules (type, dims, ts window, value)')
  .meta({ examples: [EXAMPLE_EVENTS[0]] });
/** A batch: the JSON body (NDJSON: the same events, one per line). */
const batchSchema = z
  .array(eventSchema)
  .min(1)
  .describe('A batch of events: at least 1, at most MAX_EVENTS_PER_REQUEST (default 1000)')
  .meta({ examples: [EXAMPLE_EVENTS] });

/**
 * Two Idempotency-Key headers name no one batch: 400 saying so. (Node joins them into one value, "x1, x2", which the
 * header's schema refused for its space, as if one key were malformed.)
 */
function idempotencyKeyOnce(req: FastifyRequest): void {
  const raw = req.raw.rawHeaders;
  let sent = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'idempotency-key') sent++;
  if (sent > 1) {
    throw new HttpProblem(400, 'TALLY_ERR_BAD_REQUEST', `Idempotency-Key is sent ${timesGiven(sent)}; send one key per request`, {
      field: 'idempotency-key',
    });
  }
}

/**
 * The body is parsed by the JSON/NDJSON parsers (body.ts) and checked event by event by the intake, so that
 * `?partial=true` can accept the valid events: the body schema documents the contract and is not run as a whole.
 */
const validateAllButBody: FastifySchemaCompiler<any> = (route) =>
  route.httpPart === 'body' ? (data: unknown) => ({ value: data }) : validatorCompiler(route);

const eventsRouteSchema = {
  operationId: 'sendEvents',
  summary: 'Send events',
  description: DESCRIPTION,
  tags: ['events'],
  querystring: z
    .object({
      partial: z
        .enum(['true', 'false', '1', '0'])
        .optional()
        .describe('true: accept the valid events of a request that also has invalid ones (default false: all or nothing)'),
    })
    // A misspelt parameter (?partal=true) is a 400 naming it, as on the query API, not a request taken as all or nothing.
    .strict(),
  headers: z.looseObject({
    'idempotency-key': z
      .string()
      .regex(/^[\x21-\x7e]{1,255}$/, 'Idempotency-Key must be 1-255 visible ASCII characters')
      .optional()
      .describe('Makes a retried request count once (per store, within the dedupe window)'),
  }),
  consumes: [JSON_TYPE, NDJSON_TYPE],
  body: batchSchema,
  response: {
    202: z
      .object({
        accepted: z.number().int().describe('events enqueued'),
        batchId: z.string().describe('the batch id (split batches: <batchId>.<i> per job)'),
        rejected: z.number().int().optional().describe('partial=true: events refused'),
        acceptedIndexes: z.array(z.number().int()).optional().describe('partial=true: indexes of the accepted events'),
        errors: z
          .array(eventError)
          .optional()
          .describe(`partial=true: the first ${MAX_LISTED_ERRORS} errors of the refused events, one entry per error`),
        errorCount: z.number().int().optional().describe(`partial=true, when over ${MAX_LISTED_ERRORS}: the number of errors in all`),
      })
      .meta({ examples: [{ accepted: 2, batchId: 'b7a1c1e0c3b54c3e9a51f0e7f4f2d6a1' }] }),
    400: problem
      .extend({
        rejected: z.number().int().optional().describe('TALLY_ERR_VALIDATION: the events refused'),
        errorCount: z.number().int().optional().describe('TALLY_ERR_VALIDATION, when over 100: the number of errors in all'),
        errors: z.array(eventError).optional().describe('TALLY_ERR_VALIDATION: the first 100 errors, one entry per error'),
      })
      .describe(
        'Invalid events (nothing counted), a bad Idempotency-Key or query, an empty or malformed body (or one not valid gzip/br data), or a batch with no events',
      ),
    401: problem.describe('Missing, unknown or revoked API key'),
    403: problem.describe('The key lacks the ingest scope'),
    404: problem.describe('No such route'),
    405: problem.describe('Another method than POST on /v1/events (TALLY_ERR_METHOD_NOT_ALLOWED), with an Allow header'),
    408: problem.describe('The request did not arrive in full within 30 s (TALLY_ERR_REQUEST_TIMEOUT); the connection is closed'),
    413: problem
      .extend({
        limit: z.number().int().describe('the limit exceeded: MAX_BODY_BYTES (bytes) or MAX_EVENTS_PER_REQUEST (events)'),
        count: z.number().int().optional().describe('over MAX_EVENTS_PER_REQUEST: the events the request has'),
      })
      .describe('Body over MAX_BODY_BYTES (default 1 MiB) once decompressed, or more than MAX_EVENTS_PER_REQUEST (default 1000) events'),
    415: problem.describe(
      'Content-Type other than JSON or NDJSON (TALLY_ERR_UNSUPPORTED_MEDIA_TYPE), or a Content-Encoding other than gzip or br (TALLY_ERR_UNSUPPORTED_ENCODING)',
    ),
    422: problem.describe(
      "The Idempotency-Key was used before with other events, or by a batch now in the events queue's failed set; nothing accepted",
    ),
    429: problem
      .extend({
        eventsPerSecond: z.number().optional().describe("TALLY_ERR_RATE_LIMITED: the store's ingest budget in events per second"),
        burst: z
          .number()
          .optional()
          .describe(
            'TALLY_ERR_RATE_LIMITED: the events the budget holds after a quiet spell (a larger batch passes when it is full, and the store then waits until its budget has paid for it)',
          ),
        depth: z.number().int().optional().describe("TALLY_ERR_BACKPRESSURE: the waiting batches of the store's shard of the events queue"),
        limit: z.number().int().optional().describe('TALLY_ERR_BACKPRESSURE: MAX_QUEUE_DEPTH'),
      })
      .describe(
        "The store is over its ingest budget (TALLY_ERR_RATE_LIMITED; Retry-After: seconds until the budget takes the batch), or the store's shard of the events queue is deeper than MAX_QUEUE_DEPTH (TALLY_ERR_BACKPRESSURE; Retry-After: 2)",
      ),
    417: problem.describe(
      'An Expect header other than 100-continue (TALLY_ERR_BAD_REQUEST, field expect), answered before the body is read; the connection is closed',
    ),
    431: problem.describe(
      'The request line and headers are over 16 KiB, such as a long Idempotency-Key (TALLY_ERR_HEADERS_TOO_LARGE); the connection is closed',
    ),
    500: problem.describe('An unexpected error; the collector logs it'),
    503: problem
      .extend({
        idempotencyKey: z
          .string()
          .optional()
          .describe(
            'For a request without an Idempotency-Key (TALLY_ERR_REDIS_REPLICAS_BEHIND, or TALLY_ERR_UNAVAILABLE when Redis may have taken the batch): the key it was given; retry with it to count the batch once',
          ),
      })
      .describe(
        'Redis or the key store is unreachable, or too few Redis replicas acknowledged the batch (REDIS_WAIT_REPLICAS): Retry-After 5; the collector is shutting down: Retry-After 1',
      ),
  },
};

export async function registerEventsRoute(app: TallyHttpApp, deps: EventsRouteDeps): Promise<void> {
  const { intake, metrics, budget } = deps;
  const auth = bearerAuth(deps.directory, 'ingest');

  app.post(
    '/v1/events',
    {
      schema: eventsRouteSchema,
      validatorCompiler: validateAllButBody,
      // Before the body is read: who is calling, one key per request, and can the queue take more.
      onRequest: async (req) => {
        await auth(req);
        idempotencyKeyOnce(req);
        deps.backpressure.admit(req.principal!.store);
      },
    },
    async (req, reply) => {
      // No body: undefined, or null from Fastify for a request with neither body nor Content-Type (`curl -X POST`).
      const body = req.body as unknown as EventsBody | null | undefined;
      if (body === undefined || body === null) {
        throw new HttpProblem(
          400,
          'TALLY_ERR_MALFORMED_BODY',
          `the body is empty; send a JSON array of events (Content-Type: ${JSON_TYPE})`,
          {
            field: 'body',
          },
        );
      }
      const store = req.principal!.store;
      const timeZone = req.principal!.timeZone;
      const partial = req.query.partial === 'true' || req.query.partial === '1';
      const key = req.headers['idempotency-key'];
      const now = Date.now();
      metrics.received.inc(body.items.length);

      let result = intake.validate(body.items, now);
      let errors = mergeLineErrors(result.errors, body.lineErrors);
      let enqueued: EnqueueResult | undefined;
      let retried = false;
      /**
       * A retry of a request accepted under the key at another time (its answer lost), when an event's ts may have
       * been judged otherwise then (passed the lateness horizon since, come within the clock skew, another clock):
       * validated again at the time the key's record keeps, the first attempt's events are answered as they were.
       */
      const retry = async (): Promise<boolean> => {
        retried = true;
        const r = await send(deps, key, result, () =>
          intake.enqueueRetry(store, body.items, { idempotencyKey: key!, timeZone, now, partial }),
        );
        if (r) [enqueued, result, errors] = [r.enqueued, r.validation, mergeLineErrors(r.validation.errors, body.lineErrors)];
        return r !== undefined;
      };
      // A round trip (a GET) only for a keyed request that another time could answer otherwise: one with an event
      // refused for its ts (partial), or with no other error (all or nothing).
      const ts = (e: EventError) => e.field === 'ts';
      if (key !== undefined && (partial ? errors.some(ts) : errors.length > 0 && errors.every(ts))) await retry();
      const rejected = () => body.items.length - result.events.length;
      if (errors.length > 0) {
        countRejected(metrics, errors);
        if (!partial || result.events.length === 0) {
          // Valid events refused with their request.
          metrics.rejected.inc({ reason: 'batch' }, result.events.length);
          throw new HttpProblem(
            400,
            'TALLY_ERR_VALIDATION',
            `${rejected()} of ${body.items.length} events are invalid; nothing was accepted` +
              (partial ? '' : ' (add ?partial=true to accept the valid ones)'),
            // `field` points at the first bad event's member (`[1].dims.product`); `errors` lists them all.
            {
              field: `[${errors[0]!.index}]${errors[0]!.field === '(event)' ? '' : `.${errors[0]!.field}`}`,
              extra: { rejected: rejected(), errors },
            },
          );
        }
      }

      // A retry answered above took its events from the budget when it was first accepted.
      if (!enqueued) {
        if (budget) await checkBudget(budget, metrics, store, result.events.length, req.principal!.ingestEventsPerSecond);
        // The key's tenant gives the store's time zone: the collector rolls the batch up, so the job carries the
        // counts to add (a fraction of the events' size) and the aggregator applies them as they are.
        const valid = result.events;
        // With the request's input, the key's record also identifies the events refused (partial): only the same
        // request is a retry.
        const input = { items: body.items, acceptedIndexes: result.acceptedIndexes };
        enqueued = await send(deps, key, result, async () => {
          try {
            return await intake.enqueue(store, valid, { idempotencyKey: key, timeZone, validatedAt: now, input });
          } catch (err) {
            // Other events under the key: maybe those valid at the first attempt's time (an event in the clock skew
            // since, or a partial request's event now too old), answered as then; else refused.
            const other = err instanceof IdempotencyConflictError && err.failedJobId === undefined;
            if (other && !retried && (await retry())) return enqueued!;
            throw err;
          }
        });
      }
      metrics.accepted.inc(enqueued.accepted);
      reply.code(202);
      if (errors.length === 0) return { accepted: enqueued.accepted, batchId: enqueued.batchId };
      return {
        accepted: enqueued.accepted,
        batchId: enqueued.batchId,
        rejected: rejected(),
        acceptedIndexes: result.acceptedIndexes,
        ...listedErrors(errors),
      };
    },
  );
}

/** Runs an enqueue, answering its errors as problems: 422 for an idempotency conflict, 503 while Redis cannot take the batch. */
async function send<R>(deps: EventsRouteDeps, key: string | undefined, result: ValidationResult, enqueue: () => Promise<R>): Promise<R> {
  const { metrics } = deps;
  try {
    return await enqueue();
  } catch (err) {
    if (err instanceof IdempotencyConflictError) {
      metrics.rejected.inc({ reason: 'idempotency_conflict' }, result.events.length);
      throw new HttpProblem(
        422,
        'TALLY_ERR_IDEMPOTENCY_CONFLICT',
        err.failedJobId === undefined
          ? `Idempotency-Key ${JSON.stringify(err.idempotencyKey)} was already used for a batch with other events; nothing was accepted (resend the same events to retry, or use a new key for a new batch)`
          : `Idempotency-Key ${JSON.stringify(err.idempotencyKey)} was used for a batch that is now in the events queue's failed set (job ${err.failedJobId}, refused by the aggregator); nothing was accepted. ` +
              `An operator can replay that batch (npm run dlq -- replay events ${err.failedJobId}); or send this one under a new key`,
        { field: 'idempotency-key' },
      );
    }
    if (!(err instanceof ReplicasBehindError) && !(err instanceof QueueUnavailableError)) throw err;
    const behind = err instanceof ReplicasBehindError;
    metrics.rejected.inc({ reason: behind ? 'replicas' : 'unavailable' }, result.events.length);
    // A request without a key was given one (libs/intake): the answer names it, for the retry to carry.
    const given = key === undefined ? err.idempotencyKey : undefined;
    const retry =
      given === undefined
        ? 'the same Idempotency-Key, which counts it once either way'
        : `the header Idempotency-Key: ${given} (this request had none, so it was given one), which counts it once either way`;
    // The error's own message can name Redis servers (host:port, run ids) and carry Redis' own errors: it goes to the
    // log only (the error handler logs the problem's cause), never to the client.
    throw new HttpProblem(
      503,
      behind ? 'TALLY_ERR_REDIS_REPLICAS_BEHIND' : 'TALLY_ERR_UNAVAILABLE',
      behind
        ? `too few Redis replicas confirmed that they hold the batch (REDIS_WAIT_REPLICAS): Redis holds the batch, but a failover now could lose it; retry later with ${retry}`
        : `the events queue (Redis) did not take the batch, or did not answer whether it did; retry later with ${retry}`,
      {
        headers: { 'retry-after': String(REDIS_DOWN_RETRY_AFTER_SECONDS) },
        cause: err,
        ...(given !== undefined && { extra: { idempotencyKey: given } }),
      },
    );
  }
}

/**
 * Takes the batch's events from the store's token bucket, or refuses the batch with 429 and Retry-After (that
 * store only). With Redis away the budget is not checked: the enqueue that follows answers 503.
 */
async function checkBudget(
  budget: IngestBudget,
  metrics: CollectorMetrics,
  store: string,
  events: number,
  ownRate: number | undefined,
): Promise<void> {
  let waitMs: number;
  try {
    waitMs = await budget.take(store, events, ownRate);
  } catch {
    return;
  }
  if (waitMs <= 0) return;
  metrics.rejected.inc({ reason: 'budget' }, events);
  const retryAfter = Math.max(1, Math.ceil(waitMs / 1_000));
  const { eventsPerSecond, burst, minEventsPerRequest } = budget.limitOf(ownRate);
  throw new HttpProblem(
    429,
    'TALLY_ERR_RATE_LIMITED',
    `store ${JSON.stringify(store)} is over its ingest budget of ${eventsPerSecond} events per second (a bucket of ${burst}; a request counts at least ${minEventsPerRequest} events, and a batch larger than the bucket passes when it is full and is paid off before the next); nothing was accepted, retry after ${retryAfter} s`,
    { extra: { eventsPerSecond, burst }, headers: { 'retry-after': String(retryAfter) } },
  );
}

/** NDJSON lines that were not JSON stand in the items as `undefined`; report them by their own reason. */
function mergeLineErrors(errors: EventError[], lineErrors: EventError[]): EventError[] {
  if (lineErrors.length === 0) return errors;
  const bad = new Set(lineErrors.map((e) => e.index));
  return [...errors.filter((e) => !bad.has(e.index)), ...lineErrors].sort((a, b) => a.index - b.index);
}

/** One count per refused event, by the field of its first error. */
function countRejected(metrics: CollectorMetrics, errors: EventError[]): void {
  let last = -1;
  for (const e of errors) {
    if (e.index === last) continue;
    last = e.index;
    metrics.rejected.inc({ reason: rejectReason(e.field, e.reason) });
  }
}
