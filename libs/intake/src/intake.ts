import { randomBytes } from 'node:crypto';
import { STORE_ID_PATTERN } from '@tally/key-layout';
import { jobIdFor, MAX_EVENTS_PER_JOB, QUEUE, queueFor, QUEUE_SHARDS, type PayloadOf, type TallyQueues } from '@tally/queues';
import { validateEvents, type CompiledRules, type NormalizedEvent, type ValidationResult } from '@tally/schema';
import { waitForReady, type ConnectionState } from './connection';
import { InvalidArgumentError, QueueUnavailableError, TooManyEventsError, ValidationError } from './errors';

export interface IntakeLimits {
  /** Events per call or HTTP request; more is refused whole (TooManyEventsError, HTTP 413). */
  maxEvents: number;
  /** Events stamped more than this in the future are refused. */
  clockSkewSeconds: number;
  /** Events older than this are refused. */
  latenessHorizonDays: number;
}

/** The collector's defaults (libs/config collectorEnv). */
export const DEFAULT_INTAKE_LIMITS: IntakeLimits = { maxEvents: 1_000, clockSkewSeconds: 300, latenessHorizonDays: 35 };

export type IntakeSource = PayloadOf<typeof QUEUE.events>['source'] & string;

export interface IntakeOptions {
  /** Producer queues (only `events` is used), on a connection made by createProducerConnection. */
  queues: Pick<TallyQueues, 'events'> & Partial<Pick<TallyQueues, typeof QUEUE_SHARDS>>;
  /** That connection, to refuse at once (or after `readyTimeoutMs`) while it is down. */
  redis: ConnectionState;
  rules: CompiledRules;
  limits?: Partial<IntakeLimits>;
  /** Recorded in every job. */
  source: IntakeSource;
  /** How long enqueue waits for a connection that is (re)connecting; default 0 (fail at once). */
  readyTimeoutMs?: number;
}

export interface EnqueueOptions {
  /**
   * Makes a retried call count once: the batch id and job ids derive from the store and this key (1-255 visible
   * ASCII characters). See the README for the dedupe window.
   */
  idempotencyKey?: string;
  /** Epoch ms the batch was received; default now. */
  receivedAt?: number;
}

export interface EnqueueResult {
  batchId: string;
  accepted: number;
  /** The BullMQ job ids: one per MAX_EVENTS_PER_JOB events. */
  jobIds: string[];
}

export interface Intake {
  readonly limits: IntakeLimits;
  readonly rules: CompiledRules;
  /** Throws TooManyEventsError when `count` is over the limit. */
  checkCount(count: number): void;
  /** Checks the count, then validates each event (libs/schema validateEvents) against the rules and limits. */
  validate(input: readonly unknown[], now?: number): ValidationResult;
  /** The batch id of a call: derived from store and idempotency key, or random. */
  batchIdFor(store: string, idempotencyKey?: string): string;
  /**
   * Enqueues validated events as one addBulk (one job per MAX_EVENTS_PER_JOB events; part i of a split batch has
   * batch id `<batchId>.<i>`). Resolves only once Redis holds every job; throws QueueUnavailableError otherwise.
   */
  enqueue(store: string, events: NormalizedEvent[], opts?: EnqueueOptions): Promise<EnqueueResult>;
  /** validate + enqueue, all or nothing: any invalid event rejects the whole call with a ValidationError. */
  submit(store: string, input: readonly unknown[], opts?: EnqueueOptions): Promise<EnqueueResult>;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The intake core shared by the collector and the client: validate → job payloads with batch ids → addBulk. */
export function createIntake(opts: IntakeOptions): Intake {
  const limits: IntakeLimits = { ...DEFAULT_INTAKE_LIMITS, ...opts.limits };
  const clockSkewMs = limits.clockSkewSeconds * 1_000;
  const latenessMs = limits.latenessHorizonDays * 86_400_000;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 0;

  const checkCount = (count: number) => {
    if (count > limits.maxEvents) throw new TooManyEventsError(count, limits.maxEvents);
  };

  const batchIdFor = (store: string, idempotencyKey?: string) => {
    if (idempotencyKey === undefined) return `batch-r${randomBytes(16).toString('base64url')}`;
    if (!IDEMPOTENCY_KEY.test(idempotencyKey)) {
      throw new InvalidArgumentError('idempotencyKey', 'an idempotency key is 1-255 visible ASCII characters (no spaces)');
    }
    return jobIdFor('batch', store, idempotencyKey);
  };

  const intake: Intake = {
    limits,
    rules: opts.rules,
    checkCount,
    validate(input, now = Date.now()) {
      checkCount(input.length);
      return validateEvents(opts.rules, input as unknown[], { now, clockSkewMs, latenessMs });
    },
    batchIdFor,
    async enqueue(store, events, eopts = {}) {
      if (typeof store !== 'string' || !STORE_ID_PATTERN.test(store)) {
        throw new InvalidArgumentError('store', `store id ${JSON.stringify(store)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`);
      }
      const batchId = batchIdFor(store, eopts.idempotencyKey);
      if (events.length === 0) return { batchId, accepted: 0, jobIds: [] };
      const receivedAt = eopts.receivedAt ?? Date.now();
      const parts = Math.ceil(events.length / MAX_EVENTS_PER_JOB);
      const jobs: Array<{ data: PayloadOf<typeof QUEUE.events>; opts: { jobId: string } }> = [];
      for (let i = 0; i < parts; i++) {
        const partId = parts === 1 ? batchId : `${batchId}.${i}`;
        const slice = parts === 1 ? events : events.slice(i * MAX_EVENTS_PER_JOB, (i + 1) * MAX_EVENTS_PER_JOB);
        jobs.push({ data: { batchId: partId, store, events: slice, receivedAt, source: opts.source }, opts: { jobId: partId } });
      }
      try {
        await waitForReady(opts.redis, readyTimeoutMs);
      } catch (err) {
        throw new QueueUnavailableError(`Redis is unavailable: ${(err as Error).message}`, { cause: err });
      }
      let jobIds: string[];
      try {
        // Payloads are typed against the queue's schema at compile time and built from events validateEvents
        // returned, so they are not parsed again here (that doubled the cost of a batch); the aggregator parses
        // every job it takes.
        const added = await queueFor(opts.queues, QUEUE.events, store).addBulk(jobs.map((j) => ({ name: QUEUE.events, data: j.data, opts: j.opts })));
        jobIds = added.map((j) => j.id!);
      } catch (err) {
        throw new QueueUnavailableError(`Redis did not take the batch: ${(err as Error).message}`, { cause: err });
      }
      return { batchId, accepted: events.length, jobIds };
    },
    async submit(store, input, eopts) {
      const result = intake.validate(input);
      if (result.errors.length > 0) throw new ValidationError(result.errors);
      return intake.enqueue(store, result.events, eopts);
    },
  };
  return intake;
}
