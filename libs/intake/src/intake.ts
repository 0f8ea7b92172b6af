import { hash, randomBytes } from 'node:crypto';
import { isValidTimeZone, keptForWindow, redisKeys, STORE_ID_PATTERN, timeZoneProblem } from '@tally/key-layout';
import {
  jobIdFor,
  MAX_EVENTS_PER_JOB,
  QUEUE,
  queueFor,
  QUEUE_LAYOUT,
  QUEUE_SHARDS,
  ReplicasBehindError,
  type PayloadOf,
  type ReplicaFence,
  type TallyQueues,
} from '@tally/queues';
import {
  flattenDistinct,
  flattenRows,
  rollup,
  RulesError,
  validateEvents,
  type CompiledRules,
  type DistinctAdds,
  type NormalizedEvent,
  type ValidationResult,
} from '@tally/schema';
import type { Redis } from 'ioredis';
import { waitForReady, type ConnectionState } from './connection';
import { dedupeWindow } from './dedupe-window';
import {
  IdempotencyConflictError,
  InvalidArgumentError,
  QueueUnavailableError,
  TooManyEventsError,
  UnknownStoreError,
  ValidationError,
} from './errors';
import { legacyRecords, type LegacyRecords } from './legacy-records';
import { aggregatorRulesGate } from './rules-gate';

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

/**
 * The most clock skew taken (as CLOCK_SKEW_SECONDS' bound): 23 h, the margin top lists keep before a day's ranking
 * may expire (libs/query top.ts: a day's margin less a DST hour). An event applied more than that before its day
 * starts could let the ranking go while top lists still read it.
 */
const MAX_CLOCK_SKEW_SECONDS = 82_800;

/**
 * The most days late an event is taken (as LATENESS_HORIZON_DAYS' bound, libs/config): libs/buckets erasure.ts unranks
 * an erased visitor from that many days of top lists.
 */
const MAX_LATENESS_HORIZON_DAYS = 3_650;

/** `limits`, or InvalidArgumentError (field `limits`) naming the one out of range: createIntake's check, for a caller to make first. */
export function checkLimits(limits: IntakeLimits): IntakeLimits {
  const { maxEvents, clockSkewSeconds, latenessHorizonDays } = limits;
  const bad = (what: string) => new InvalidArgumentError('limits', `limits.${what}`);
  if (!Number.isInteger(maxEvents) || maxEvents < 1) throw bad(`maxEvents ${maxEvents} is invalid: a whole number of events, at least 1`);
  if (!Number.isFinite(clockSkewSeconds) || clockSkewSeconds < 0 || clockSkewSeconds > MAX_CLOCK_SKEW_SECONDS) {
    throw bad(`clockSkewSeconds ${clockSkewSeconds} is invalid: seconds from 0 to ${MAX_CLOCK_SKEW_SECONDS} (23 h)`);
  }
  if (!Number.isFinite(latenessHorizonDays) || latenessHorizonDays <= 0 || latenessHorizonDays > MAX_LATENESS_HORIZON_DAYS) {
    throw bad(
      `latenessHorizonDays ${latenessHorizonDays} is invalid: a number of days above 0, at most ${MAX_LATENESS_HORIZON_DAYS} (as LATENESS_HORIZON_DAYS)`,
    );
  }
  return limits;
}

/** What a value is, for an error saying what was given instead (`null`, `a Set`, `number 5`). */
function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') {
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === 'string' && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return `${typeof value} ${typeof value === 'string' ? JSON.stringify(value.slice(0, 40)) : String(value)}`;
}

/**
 * InvalidArgumentError (field `events`) unless `input` is an array, checked before anything reads it: a caller
 * without a type checker may pass null, one event or a Set, which would otherwise fail as a bare TypeError.
 */
export function checkEvents(input: unknown): asserts input is readonly unknown[] {
  if (!Array.isArray(input)) {
    throw new InvalidArgumentError('events', `events must be an array of events (got ${kindOf(input)}); nothing was enqueued`);
  }
}

export type IntakeSource = PayloadOf<typeof QUEUE.events>['source'] & string;

export interface IntakeOptions {
  /**
   * Producer queues (only `events` is used), on a connection made by createProducerConnection. Their KEY_PREFIX
   * (createQueues' layout; libs/key-layout redisKeys' default for queues without one) names the idempotency records.
   */
  queues: Pick<TallyQueues, 'events'> & Partial<Pick<TallyQueues, typeof QUEUE_SHARDS | typeof QUEUE_LAYOUT>>;
  /**
   * That connection, to refuse at once (or after `readyTimeoutMs`) while it is down, to remember the fingerprint of
   * each idempotency key's batch (in the store's slot: libs/key-layout `idempotency`), and to look for the key's jobs
   * in the failed set of the store's events shard (ZMSCORE, sent with the fingerprint's SET: one round trip, on a
   * cluster possibly two masters); during the upgrade window (legacy-records.ts, a marker on the first events shard)
   * to bind and look for the record where earlier versions kept it too, in the same round trip.
   */
  redis: ConnectionState & Pick<Redis, 'set' | 'get' | 'del' | 'zmscore'>;
  /**
   * The key where the aggregator marks a store it refused for having no tenant (libs/key-layout
   * `redisKeys(prefix).unknownStore`). When given, a store with a mark is refused with UnknownStoreError while it
   * lasts (one GET per call); the queue path uses it, the collector (whose keys belong to tenants) does not.
   */
  unknownStoreKey?: (store: string) => string;
  /**
   * The dedupe window, DEDUPE_WINDOW_SECONDS (default 86,400), as the aggregators run it (with `dedupeWindowKey`,
   * only while they publish none). An idempotency key's batch fingerprint is kept twice this long plus the
   * aggregator's slack (fingerprintTtlSeconds): a batch is applied within one window of its acceptance (the
   * aggregator refuses it after), and its dedupe record lasts a window and the slack from that apply, so a key
   * reused for other events before then would be queued and then skipped as a duplicate. A `receivedAt` may be at
   * most a tenth of it old.
   */
  idempotencyWindowSeconds?: number;
  /**
   * Where the aggregators publish their DEDUPE_WINDOW_SECONDS (libs/key-layout `redisKeys(prefix).dedupeWindow`).
   * When given, the published window (read at most once a minute) is used instead of `idempotencyWindowSeconds`
   * while there is one: the client's way to follow the aggregators, whose settings it does not read.
   */
  dedupeWindowKey?: string;
  rules: CompiledRules;
  /**
   * Where the aggregators publish their rules fingerprint (libs/key-layout `redisKeys(prefix).rules`). When given, a
   * batch with a `timeZone` goes rolled up only while the fingerprint there is `rules.fingerprint` (aggregatorRulesGate:
   * read at most once a minute), since the aggregator applies rows as they are; otherwise it goes as events, which the
   * aggregator rolls up by its own rules, and `onRulesDiffer` is told once per other fingerprint. Without it a
   * `timeZone` is always used (the caller vouches that its rules are the aggregators').
   */
  rulesKey?: string;
  onRulesDiffer?: (theirs: string, own: string) => void;
  limits?: Partial<IntakeLimits>;
  /** Recorded in every job. */
  source: IntakeSource;
  /** How long enqueue waits for a connection that is (re)connecting; default 0 (fail at once). */
  readyTimeoutMs?: number;
  /**
   * REDIS_WAIT_REPLICAS: when given (libs/queues createReplicaFence, on a connection of its own), enqueue resolves
   * only once that many Redis replicas hold the batch, and throws ReplicasBehindError when fewer did in time.
   */
  replicaFence?: ReplicaFence;
}

export interface EnqueueOptions {
  /**
   * Makes a retried call count once: the batch id and job ids derive from the store and this key (1-255 visible
   * ASCII characters). See the README for the dedupe window.
   */
  idempotencyKey?: string;
  /**
   * Epoch ms the batch was received; default now. A whole number of ms, at most the clock skew
   * (`limits.clockSkewSeconds`) ahead and a tenth of the dedupe window behind, else InvalidArgumentError: the
   * aggregator counts a batch's age from it and refuses one older than the window.
   */
  receivedAt?: number;
  /**
   * The store's IANA time zone, when the caller knows it (the collector, from the tenant directory): the jobs then
   * carry the batch rolled up by the rules in that zone (`rows`, `count`) instead of its events, so the aggregator
   * neither parses the events again nor rolls them up (with `rulesKey`, only while the aggregators run the same
   * rules). Without it, the jobs carry the events. An IANA name or a UTC offset (InvalidArgumentError otherwise; an
   * offset such as `+05:37`, which a new store may not take, is rolled up event by event, as the aggregator does).
   */
  timeZone?: string;
}

/** enqueue's options: EnqueueOptions and the time the events were validated at. */
export interface BindOptions extends EnqueueOptions {
  /**
   * Epoch ms the events were validated at (`validate`'s `now`); default now. Kept with an idempotency key's
   * fingerprint: a retry (`enqueueRetry`) validates the same events at this time, so they give the same batch.
   */
  validatedAt?: number;
  /**
   * The call's input and the indexes of `events` in it (validate's `acceptedIndexes`), when `events` are its valid
   * events only (`?partial=true`): the key's record then identifies the refused events too (refusedFingerprint,
   * hashed only when some were), so another input with the same valid events is not taken for a retry.
   */
  input?: { items: readonly unknown[]; acceptedIndexes: readonly number[] };
}

/** enqueueRetry's options: the call's key, when it is validated (`now`), and whether it takes the valid events only. */
export interface RetryOptions extends EnqueueOptions {
  idempotencyKey: string;
  /** The call's time, for a key bound before the validation time was kept with it; default now. */
  now?: number;
  /** `?partial=true`: the events valid then are the batch, if any; otherwise every event must have been valid. */
  partial?: boolean;
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
  /**
   * Checks that `input` is an array (checkEvents) and the count, then validates each event (libs/schema validateEvents) against the rules and limits; with
   * `lateness: false`, events older than the lateness horizon pass.
   */
  validate(input: readonly unknown[], now?: number, o?: { lateness?: boolean }): ValidationResult;
  /** The batch id of a call: derived from store and idempotency key, or random. */
  batchIdFor(store: string, idempotencyKey?: string): string;
  /**
   * Enqueues validated events (at least 1: none throws InvalidArgumentError): one job per MAX_EVENTS_PER_JOB events,
   * `add` for one, `addBulk` for more (part i of a split batch has batch id `<batchId>.<i>`). Resolves only once
   * Redis holds every job; throws QueueUnavailableError otherwise. addBulk is a pipeline, not a transaction: a
   * failure part-way may leave some parts queued, and the error's idempotency key completes the rest when retried
   * with the same events (the parts queued already are the same job ids, which BullMQ does not add twice).
   * With an idempotency key already used for a different batch within two dedupe windows, or a fresh key
   * whose job is in the failed set, throws IdempotencyConflictError and enqueues nothing; for a store marked
   * unknown (`unknownStoreKey`), throws UnknownStoreError and enqueues nothing. With `replicaFence`, throws
   * ReplicasBehindError (after enqueueing) when fewer Redis replicas than it waits for hold the batch in time: the
   * master has it, a failover could lose it, and a retry with the same idempotency key is counted once whichever
   * happens. A key given to a call without one, which an error names for the retry, is bound to the events then.
   */
  enqueue(store: string, events: NormalizedEvent[], opts?: BindOptions): Promise<EnqueueResult>;
  /**
   * A call with an idempotency key may retry a batch accepted at another time, whose answer was lost: some of its
   * events may have passed the lateness horizon since, or come within the clock skew (or the clocks differ). Reads
   * the key's record (one GET instead of enqueue's SET) and validates `input` again at the time kept there (a record
   * from before that time was kept: at `now` without the lateness horizon). When the events valid then (`partial`: at
   * least one; otherwise all) have the key's fingerprint, and the others the record's refusedFingerprint (when it
   * keeps one), enqueues them as enqueue does (the jobs already queued are the same ids) and resolves with the
   * result, the original batch's, and that validation; otherwise enqueues nothing and resolves undefined (the caller
   * answers the call as it would have).
   */
  enqueueRetry(
    store: string,
    input: readonly unknown[],
    opts: RetryOptions,
  ): Promise<{ enqueued: EnqueueResult; validation: ValidationResult } | undefined>;
  /**
   * validate + enqueue, all or nothing: any invalid event rejects the whole call with a ValidationError, unless the
   * call has an idempotency key and is a retry of a batch accepted when every event was in time (enqueueRetry).
   */
  submit(store: string, input: readonly unknown[], opts?: EnqueueOptions): Promise<EnqueueResult>;
  /**
   * The checks of a call's arguments that need no Redis (store id, no events, the idempotency key's form, timeZone):
   * InvalidArgumentError on the first that cannot be used, as enqueue throws it.
   */
  checkArgs(store: string, count: number, opts: EnqueueOptions): void;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/**
 * The fingerprint of a batch: SHA-256 of its validated events in a canonical form (dims sorted by name; validateEvents
 * gives each value one spelling), so the same events sent again, whatever the JSON key order or number spelling,
 * match, and any other batch does not.
 */
export function batchFingerprint(events: readonly NormalizedEvent[]): string {
  // One line per event, hashed in one update (the same digest as an update per line, at a fraction of the cost).
  const lines: string[] = [];
  for (const e of events) {
    const keys = Object.keys(e.dims);
    if (keys.length === 2) {
      if (keys[1]! < keys[0]!) keys.reverse();
    } else if (keys.length > 2) keys.sort();
    const dims: string[][] = [];
    for (const k of keys) dims.push([k, e.dims[k]!]);
    lines.push(JSON.stringify([e.type, e.ts, e.id ?? null, dims, e.value ?? null]));
  }
  lines.push('');
  return hash('sha256', lines.join('\n'), 'base64url');
}

/** A refused event's JSON, each object's members sorted by name (a BigInt as `<n>n`; what JSON cannot hold, String). */
function canonicalJson(value: unknown): string {
  try {
    return (
      JSON.stringify(value, (_k, v: unknown) => {
        if (typeof v === 'bigint') return `${v}n`;
        if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
        return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
      }) ?? String(value)
    );
  } catch {
    return String(value);
  }
}

/**
 * What identifies the events of `input` that validation refused (`acceptedIndexes` are the others): '' when none was,
 * else SHA-256 of each one's index and JSON (members sorted by name). Kept in an idempotency key's record with the
 * fingerprint of the accepted events, so a partial request is a retry only with the same refused events too.
 */
export function refusedFingerprint(input: readonly unknown[], acceptedIndexes: readonly number[]): string {
  if (acceptedIndexes.length === input.length) return '';
  const lines: string[] = [];
  for (let i = 0, a = 0; i < input.length; i++) {
    if (acceptedIndexes[a] === i) a++;
    else lines.push(`${i} ${canonicalJson(input[i])}`);
  }
  return hash('sha256', lines.join('\n'), 'base64url');
}

/**
 * The events rolled up (flat rows, and the distinct-count members of the rows that have sketches), or undefined when
 * the rules cannot place them (the aggregator then refuses the job with the reason).
 */
function rolledUp(
  rules: CompiledRules,
  store: string,
  timeZone: string,
  events: readonly NormalizedEvent[],
): { rows: Array<string | number>; distinct: Array<string | number> } | undefined {
  try {
    const distinct: DistinctAdds = new Map();
    const rows = flattenRows(rollup(rules, store, timeZone, events, new Map(), distinct));
    return rows.length > 0 ? { rows, distinct: flattenDistinct(distinct) } : undefined;
  } catch (err) {
    if (err instanceof RulesError) return undefined;
    throw err;
  }
}

/** How old a `receivedAt` may be, as a fraction of the dedupe window: the aggregator has the rest to apply the batch. */
const RECEIVED_AT_MAX_AGE = 0.1;

/**
 * How long an idempotency key's fingerprint is kept under the dedupe window `windowSeconds` (W): as long as the
 * aggregator may skip the key's batch id. A batch is applied within W of its acceptance (the aggregator refuses it
 * after), and its dedupe record is kept W plus a slack from that apply (`keptForWindow`: 10% of W, at least 5
 * minutes): 2 W and that slack.
 */
function fingerprintTtlSeconds(windowSeconds: number): number {
  return windowSeconds + keptForWindow(windowSeconds);
}

/** The intake core shared by the collector and the client: validate → job payloads with batch ids → add / addBulk. */
export function createIntake(opts: IntakeOptions): Intake {
  const limits = checkLimits({ ...DEFAULT_INTAKE_LIMITS, ...opts.limits });
  const clockSkewMs = limits.clockSkewSeconds * 1_000;
  const latenessMs = limits.latenessHorizonDays * 86_400_000;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 0;
  const dedupe = dedupeWindow(opts.redis, opts.dedupeWindowKey, opts.idempotencyWindowSeconds ?? 86_400);
  const own = opts.rules.fingerprint;
  const rulesAgree = opts.rulesKey
    ? aggregatorRulesGate(opts.redis, opts.rulesKey, own, (theirs) => opts.onRulesDiffer?.(theirs, own))
    : async () => true;
  const keys = redisKeys(opts.queues[QUEUE_LAYOUT]?.keyPrefix);
  let marker: LegacyRecords | undefined;
  /** Whether records may still be where earlier versions kept them, the first events shard (made at the first keyed call). */
  const legacy = () => (marker ??= legacyRecords(opts.redis, opts.queues.events.toKey('idem-legacy-until')));

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

  /** A caller's `receivedAt`, or InvalidArgumentError (the aggregator would refuse the batch, or the schema would). */
  const checkReceivedAt = (receivedAt: number, now: number, windowSeconds: number): number => {
    const hint = (why: string) =>
      new InvalidArgumentError(
        'receivedAt',
        `receivedAt ${JSON.stringify(receivedAt)} ${why}; nothing was enqueued (leave it out for now)` +
          (Number.isSafeInteger(receivedAt) && receivedAt > 0 && receivedAt < 1e11 ? ' (it looks like seconds: Date.now() gives ms)' : ''),
      );
    if (!Number.isSafeInteger(receivedAt)) throw hint('is not epoch milliseconds (a whole number, as Date.now())');
    if (receivedAt > now + clockSkewMs) throw hint(`is more than ${limits.clockSkewSeconds} s in the future`);
    const maxAgeMs = windowSeconds * 1_000 * RECEIVED_AT_MAX_AGE;
    if (receivedAt < now - maxAgeMs) {
      throw hint(
        `is more than ${maxAgeMs / 1_000} s ago, a tenth of the dedupe window (DEDUPE_WINDOW_SECONDS=${windowSeconds}): the aggregator refuses a batch received longer than the window ago`,
      );
    }
    return receivedAt;
  };

  const checkArgs = (store: string, count: number, eopts: EnqueueOptions) => {
    if (typeof store !== 'string' || !STORE_ID_PATTERN.test(store)) {
      throw new InvalidArgumentError(
        'store',
        `store id ${JSON.stringify(store)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`,
      );
    }
    // Like the collector's 400 for `[]`: a call with no events is a mistake to report, not a batch id for nothing.
    if (count === 0) throw new InvalidArgumentError('events', 'events must hold at least 1 event (got none); nothing was enqueued');
    if (eopts.idempotencyKey !== undefined) batchIdFor(store, eopts.idempotencyKey);
    // An unknown zone would throw a RangeError in the rollup, or be dropped unseen when the rules differ. An offset
    // a new store may not take (`+05:37`, timeZoneProblem) is still a store's zone if it was set before that was
    // refused: the rollup bins it event by event (binsBySlot), as the aggregator does.
    const tz = eopts.timeZone;
    if (tz !== undefined && !isValidTimeZone(tz))
      throw new InvalidArgumentError('timeZone', `timeZone ${JSON.stringify(tz)} ${timeZoneProblem(tz)}; nothing was enqueued`);
  };

  /**
   * enqueue (`batch` the events: the key's first batch sets its fingerprint) or enqueueRetry (`batch` gives the events
   * valid at the time the key's record keeps, undefined for a record without one, and the refusedFingerprint of the
   * rest: only under a matching record).
   */
  const send = async (
    store: string,
    batch: NormalizedEvent[] | ((validatedAt: number | undefined) => { events: NormalizedEvent[]; refused: () => string } | undefined),
    eopts: BindOptions,
  ): Promise<EnqueueResult | undefined> => {
    const retry = typeof batch === 'function' ? batch : undefined;
    let events = retry ? [] : (batch as NormalizedEvent[]);
    if (!retry) {
      checkEvents(events);
      checkArgs(store, events.length, eopts);
    }
    // A batch without an idempotency key is given one: a write that failed after Redis may have taken it (a
    // timeout, a dropped connection; ReplicasBehindError always comes after) can be retried under the key the
    // error names (err.idempotencyKey), and counts once. The key is bound to the events when an error names it
    // (bindGivenKey): the only time a caller learns it, so a batch that succeeds costs no record.
    const given = eopts.idempotencyKey;
    const idempotencyKey = given ?? `auto-${randomBytes(16).toString('base64url')}`;
    const batchId = batchIdFor(store, idempotencyKey);
    const receivedAt = eopts.receivedAt === undefined ? Date.now() : checkReceivedAt(eopts.receivedAt, Date.now(), await dedupe.get());
    // The key's record, in the store's slot whatever QUEUE_SHARDS is; and where earlier versions kept it, the first
    // events shard, bound and read too during the upgrade window (legacyRecords).
    const record = keys.idempotency(store, batchId);
    const legacyRecord = () => opts.queues.events.toKey(`idem:${batchId}`);
    /** Whether this call's record commands reached the legacy record (its shard then needs a fence). */
    let legacyTouched = false;
    /**
     * `command` on the record and, unless the upgrade window is known to be over, on the legacy record, sent at once
     * with the marker's read (before its first answer) and `also` (one round trip): the record's answer, the legacy
     * one's (undefined when not sent, or not answered once the marker says the window is over), and `also`'s. Throws
     * when the record's or `also` was not answered, or the legacy one's while the window is open or not known.
     */
    const onRecords = async <T, A = undefined>(
      command: (key: string) => Promise<T>,
      lifetimeSeconds: number,
      also?: () => Promise<A>,
    ): Promise<[T, T | undefined, A | undefined]> => {
      const window = legacy().open(lifetimeSeconds);
      const [mine, old, open, other] = await Promise.all([
        command(record),
        window === false
          ? undefined
          : command(legacyRecord()).then(
              (value) => ({ value }),
              (error: unknown) => ({ error }),
            ),
        // A marker Redis did not answer: the window may be open.
        Promise.resolve(window).catch(() => true),
        also?.(),
      ]);
      if (old && 'error' in old && open) throw old.error;
      legacyTouched ||= old !== undefined && 'value' in old;
      return [mine, old && 'value' in old ? old.value : undefined, other];
    };
    // The record: the fingerprint, the time the events were validated at, so a retry is validated as the first
    // attempt was whatever the time, and the refusedFingerprint of the input's other events ('' when none was):
    // `<fingerprint>:<ms>:<refused>`. Earlier versions kept `<fingerprint>` and then `<fingerprint>:<ms>`: such a
    // record says nothing of refused events and is matched by its fingerprint alone (gone two dedupe windows on).
    const validatedAt = eopts.validatedAt ?? Date.now();
    const refused = () => (eopts.input ? refusedFingerprint(eopts.input.items, eopts.input.acceptedIndexes) : '');
    const bound = (fingerprint: string, refusedOnes: string) => `${fingerprint}:${validatedAt}:${refusedOnes}`;
    /** Binds a key this call made up to its events, once an error hands the key out for a retry (best effort). */
    const bindGivenKey = () => {
      if (given !== undefined) return;
      try {
        // Sent before the error is thrown, so a retry on this connection comes after it; not waited for (Redis may be away).
        const value = bound(batchFingerprint(events), refused());
        for (const key of legacy().last() === false ? [record] : [record, legacyRecord()])
          opts.redis.set(key, value, 'EX', fingerprintTtlSeconds(dedupe.last()), 'NX').catch(() => undefined);
      } catch {
        // not connected: nothing to bind, nothing was queued under the key either
      }
    };
    const unavailable = (message: string, cause: unknown) => {
      const err = new QueueUnavailableError(message, { cause });
      err.idempotencyKey = idempotencyKey;
      bindGivenKey();
      return err;
    };
    const timeZone = eopts.timeZone !== undefined && (await rulesAgree()) ? eopts.timeZone : undefined;
    const jobsOf = (events: NormalizedEvent[]) => {
      const parts = Math.ceil(events.length / MAX_EVENTS_PER_JOB);
      const jobs: Array<{ data: PayloadOf<typeof QUEUE.events>; opts: { jobId: string } }> = [];
      for (let i = 0; i < parts; i++) {
        const partId = parts === 1 ? batchId : `${batchId}.${i}`;
        const slice = parts === 1 ? events : events.slice(i * MAX_EVENTS_PER_JOB, (i + 1) * MAX_EVENTS_PER_JOB);
        const r = timeZone === undefined ? undefined : rolledUp(opts.rules, store, timeZone, slice);
        const data: PayloadOf<typeof QUEUE.events> = r
          ? {
              batchId: partId,
              store,
              rows: r.rows,
              ...(r.distinct.length > 0 && { distinct: r.distinct }),
              count: slice.length,
              receivedAt,
              source: opts.source,
            }
          : { batchId: partId, store, events: slice, receivedAt, source: opts.source };
        jobs.push({ data, opts: { jobId: partId } });
      }
      return jobs;
    };
    let jobs = jobsOf(events);
    const queue = queueFor(opts.queues, QUEUE.events, store);
    try {
      await waitForReady(opts.redis, readyTimeoutMs);
    } catch (err) {
      throw unavailable(`Redis is unavailable: ${(err as Error).message}`, err);
    }
    // Before the writes the wait for replicas covers: it fails when a Redis connection closed since (a failover).
    const mark = opts.replicaFence?.mark() ?? 0;
    if (opts.unknownStoreKey) {
      let refusedAt: string | null;
      try {
        refusedAt = await opts.redis.get(opts.unknownStoreKey(store));
      } catch (err) {
        throw unavailable(`Redis did not answer: ${(err as Error).message}`, err);
      }
      if (refusedAt !== null) throw new UnknownStoreError(store, new Date(Number(refusedAt)));
    }
    if (retry) {
      let earlier: string | null;
      try {
        const [mine, old] = await onRecords((key) => opts.redis.get(key), fingerprintTtlSeconds(await dedupe.get()));
        earlier = mine ?? old ?? null;
      } catch (err) {
        throw unavailable(`Redis did not answer: ${(err as Error).message}`, err);
      }
      if (earlier === null) return undefined;
      const [fingerprint, at, refusedThen] = earlier.split(':');
      const then = retry(Number.isSafeInteger(Number(at)) ? Number(at) : undefined);
      if (then === undefined || then.events.length === 0 || batchFingerprint(then.events) !== fingerprint) return undefined;
      if (refusedThen !== undefined && then.refused() !== refusedThen) return undefined;
      events = then.events;
      jobs = jobsOf(events);
    } else if (given !== undefined) {
      // The key's first batch sets its fingerprint (the IETF Idempotency-Key draft, Stripe): a retry of the same
      // batch passes on to add/addBulk, whose job ids make it a no-op; another batch under the key is refused. Kept
      // as long as the aggregator may skip the key's batch id (fingerprintTtlSeconds). Sent with it, in the same
      // round trip (the store's slot and its events shard: on a cluster possibly two masters, asked at once): whether
      // the key's jobs are in the failed set, kept 14 days, whose ids BullMQ would answer with, queueing nothing. During
      // the upgrade window the record is bound where earlier versions keep it too, in the same round trip: a record
      // there for other events is a conflict as well (legacyRecords).
      const fingerprint = batchFingerprint(events);
      const refusedNow = refused();
      const ids = jobs.map((j) => j.opts.jobId);
      const ttl = fingerprintTtlSeconds(await dedupe.get());
      let earlier: Array<[key: string, then: string | null]>;
      let failed: Array<string | null>;
      try {
        const value = bound(fingerprint, refusedNow);
        const [mine, old, inFailedSet] = await onRecords(
          (key) => opts.redis.set(key, value, 'EX', ttl, 'NX', 'GET'),
          ttl,
          () => opts.redis.zmscore(queue.toKey('failed'), ...ids),
        );
        earlier = [[record, mine], ...(old === undefined ? [] : [[legacyRecord(), old] as [string, string | null]])];
        failed = inFailedSet!;
      } catch (err) {
        throw unavailable(`Redis did not take the batch: ${(err as Error).message}`, err);
      }
      const conflict = earlier.some(([, then]) => {
        if (then === null) return false;
        const [fingerprintThen, , refusedThen] = then.split(':');
        return fingerprintThen !== fingerprint || (refusedThen !== undefined && refusedThen !== refusedNow);
      });
      const inFailed = conflict || earlier.some(([, then]) => then !== null) ? -1 : failed.findIndex((score) => score !== null);
      if (conflict || inFailed >= 0) {
        // Not bound to this batch: the records this call made go (a fresh key whose batch would be answered with the
        // failed job; one place without the record while the other had it for other events).
        await Promise.all(earlier.flatMap(([key, then]) => (then === null ? [opts.redis.del(key).catch(() => undefined)] : [])));
        throw new IdempotencyConflictError(given, conflict ? undefined : ids[inFailed]);
      }
      // Bound in one place before (the upgrade window): the copy this call made takes that record's value, its time and
      // refused events, as a retry is to be validated (not waited for: the same fingerprint either way).
      const then = earlier.find(([, value]) => value !== null)?.[1];
      for (const [key, value] of earlier) {
        if (then && value === null) opts.redis.set(key, then, 'KEEPTTL', 'XX').catch(() => undefined);
      }
    }
    let jobIds: string[];
    try {
      // Payloads are typed against the queue's schema at compile time and built from events validateEvents
      // returned, so they are not parsed again here (that doubled the cost of a batch); the aggregator parses
      // every job it takes.
      // One job (every collector request unless MAX_EVENTS_PER_REQUEST is raised over MAX_EVENTS_PER_JOB) goes by
      // `add`: the same script as addBulk's, without the ioredis pipeline addBulk builds for it (x0.5 to x0.9 of the
      // client CPU of the add in tools/bench/src/micro-collector.ts runs). addBulk's pipeline is no transaction:
      // see Intake.enqueue for a failure part-way.
      if (jobs.length === 1) jobIds = [(await queue.add(QUEUE.events, jobs[0]!.data, jobs[0]!.opts)).id!];
      else jobIds = (await queue.addBulk(jobs.map((j) => ({ name: QUEUE.events, data: j.data, opts: j.opts })))).map((j) => j.id!);
    } catch (err) {
      throw unavailable(`Redis did not take the batch: ${(err as Error).message}`, err);
    }
    if (opts.replicaFence) {
      // A fence on the jobs' queue shard; with a caller's key on the store's slot, which holds its record (the store's
      // fence key); and on the first events shard when the call reached the legacy record there: on a cluster, every
      // master this call wrote to or read its record from (on one server, one WAIT covers all).
      const fences = [
        queue.toKey('fence'),
        ...(given === undefined ? [] : [keys.fence(store)]),
        ...(legacyTouched ? [opts.queues.events.toKey('fence')] : []),
      ];
      try {
        await opts.replicaFence.wait(fences, `batch ${batchId}`, mark);
      } catch (err) {
        if (err instanceof ReplicasBehindError) {
          err.idempotencyKey = idempotencyKey;
          bindGivenKey();
        }
        throw err;
      }
    }
    return { batchId, accepted: events.length, jobIds };
  };

  const intake: Intake = {
    limits,
    rules: opts.rules,
    checkCount,
    checkArgs,
    validate(input, now = Date.now(), o) {
      checkEvents(input);
      checkCount(input.length);
      return validateEvents(opts.rules, input as unknown[], {
        now,
        clockSkewMs,
        latenessMs: o?.lateness === false ? Infinity : latenessMs,
      });
    },
    batchIdFor,
    async enqueue(store, events, eopts = {}) {
      return (await send(store, events, eopts))!;
    },
    async enqueueRetry(store, input, eopts) {
      if (eopts?.idempotencyKey === undefined) {
        throw new InvalidArgumentError('idempotencyKey', 'enqueueRetry retries a call with an idempotency key: give it');
      }
      checkEvents(input);
      checkArgs(store, input.length, eopts);
      const now = eopts.now ?? Date.now();
      let validation: ValidationResult | undefined;
      const enqueued = await send(
        store,
        (at) => {
          const v = (validation = intake.validate(input, at ?? now, at === undefined ? { lateness: false } : undefined));
          if (eopts.partial ? v.events.length === 0 : v.errors.length > 0) return undefined;
          // The caller's dims objects may change once this returns: the jobs take copies.
          for (const e of v.events) e.dims = { ...e.dims };
          return { events: v.events, refused: () => refusedFingerprint(input, v.acceptedIndexes) };
        },
        eopts,
      );
      return enqueued && { enqueued, validation: validation! };
    },
    async submit(store, input, eopts) {
      const now = Date.now();
      const result = intake.validate(input, now);
      if (result.errors.length === 0) {
        // Valid events keep the caller's dims objects, which may change once this returns: the jobs take copies.
        for (const e of result.events) e.dims = { ...e.dims };
        return intake.enqueue(store, result.events, { ...eopts, validatedAt: now });
      }
      // All or nothing: any error refuses the call, unless its key says it was accepted at another time, every event
      // valid then (its answer lost): only an error of an event's ts may be one that time did not have.
      const key = eopts?.idempotencyKey;
      if (key !== undefined && result.errors.every((e) => e.field === 'ts')) {
        const retried = await intake.enqueueRetry(store, input, { ...eopts, idempotencyKey: key, now });
        if (retried) return retried.enqueued;
      }
      throw new ValidationError(result.errors);
    },
  };
  return intake;
}
