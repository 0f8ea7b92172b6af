import { BucketsError, type BucketStore } from '@tally/buckets';
import { REDIS_SUFFIX, redisKeys } from '@tally/key-layout';
import { batchAcceptedAt, eventsJobSchema, isRedisUnavailable, jobData, ReplicasBehindError, type StoreFence } from '@tally/queues';
import { rollup, RulesError, type CompiledRules, type DistinctAdds } from '@tally/schema';
import type { TenantDirectory } from '@tally/tenants';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { throttleLog, type ThrottledLog } from '@tally/observability';
import type { Logger } from 'pino';
import type { AggregatorMetrics } from './aggregator-metrics';

export interface EventsProcessorDeps {
  buckets: BucketStore;
  rules: CompiledRules;
  /**
   * The store's IANA time zone, or undefined when the store has no tenant (the batch is refused); throws when it
   * cannot be known right now (tenant directory unreachable: the batch waits).
   */
  timeZoneOf: (store: string) => Promise<string | undefined>;
  /** Marks a store refused as unknown, for @tally/client (see storeMarks). */
  unknownStores?: Pick<StoreMarks, 'mark'>;
  dedupeTtlSeconds: number;
  metrics: AggregatorMetrics;
  log: Logger;
  now?: () => number;
  /** Test-only crash points (TALLY_CRASH_POINT). */
  crash?: (point: string) => void;
  /**
   * REDIS_WAIT_REPLICAS (libs/queues storeFence, on the store's fence key and on its work-set shard's (workFence): on
   * a Redis Cluster the masters of the store's slot and of the shard's, which need not be each other's nor the events
   * queue's): `mark` before the batch's first write, `wait` before the job completes, so a failover of either master
   * after the apply's or the registration's answer cannot lose a batch, or the sealer's visit of its bucket, whose job
   * is gone. Fewer replicas in time on either: ReplicasBehindError, and the job waits and retries (its apply then finds
   * the batch applied, it registers the store again, and waits again).
   */
  replicated?: StoreFence;
  /**
   * Where the batches' waits and refusals are logged: one line per kind (time zone unknown, Redis unavailable, replicas
   * behind, each reason a batch goes to the failed set) and window, naming the first job, and on the kind's next line
   * how many were not logged (`suppressed`): an outage or a refused backlog makes thousands a second. Every one is
   * still counted (tally_batch_waits_total, tally_batches_rejected_total), and a refused batch is in the failed set
   * with its reason.
   * Default: one of the processor's own (throttleLog's 10 s window, on `now`).
   */
  warnings?: ThrottledLog;
}

/**
 * The fence key of the store's work-set shard (`<p>:{<p>:wW}:f`, in the shard's hash slot, as its `active` and `next`
 * that registerStore writes): a wait for replicas on it covers the store's registration.
 */
export const workFence = (buckets: Pick<BucketStore, 'keys' | 'shardOf'>, store: string): string =>
  buckets.keys.work(buckets.shardOf(store)) + REDIS_SUFFIX.fence;

/**
 * Longest wait between attempts while the time zone cannot be resolved, the store's Redis is unavailable or the
 * replicas are behind; the job never fails for it (past the dedupe window it is refused: pastDedupeWindow).
 */
const MAX_WAIT_MS = 30_000;

/** What @tally/client reads of the aggregator's tenant lookups. */
export interface StoreMarks {
  /** Sets the store's unknown mark (the time of the refusal; it expires): clients refuse the store at once meanwhile. */
  mark(store: string): Promise<void>;
  /** Lifts it: the store has a tenant now. */
  clear(store: string): Promise<void>;
  /** Publishes the tenant's time zone (it expires): clients roll the store's batches up in it. */
  zone(store: string, timeZone: string): Promise<void>;
  /** Publishes this aggregator's rules fingerprint (it expires): clients roll up only with rules of the same one. */
  rules(fingerprint: string): Promise<void>;
  /** Publishes its DEDUPE_WINDOW_SECONDS (it expires): the dlq tool guards replays with it. */
  dedupeWindow(seconds: number): Promise<void>;
}

/** How long a published time zone lasts; tenantTimeZones publishes it again after half of it, or at once on a change. */
export const STORE_ZONE_TTL_MS = 600_000;

/** The marks @tally/client and the dlq tool read (libs/key-layout `unknownStore`, kept `ttlMs`, `storeZone`, `rules`, `dedupeWindow`). */
export function storeMarks(
  redis: { set(key: string, value: string, px: 'PX', ms: number): Promise<unknown>; del(key: string): Promise<unknown> },
  prefix: string,
  ttlMs: number,
  now: () => number = Date.now,
): StoreMarks {
  const keys = redisKeys(prefix);
  return {
    mark: async (store) => void (await redis.set(keys.unknownStore(store), String(now()), 'PX', ttlMs)),
    clear: async (store) => void (await redis.del(keys.unknownStore(store))),
    zone: async (store, timeZone) => void (await redis.set(keys.storeZone(store), timeZone, 'PX', STORE_ZONE_TTL_MS)),
    rules: async (fingerprint) => void (await redis.set(keys.rules, fingerprint, 'PX', STORE_ZONE_TTL_MS)),
    dedupeWindow: async (seconds) => void (await redis.set(keys.dedupeWindow, String(seconds), 'PX', STORE_ZONE_TTL_MS)),
  };
}

/**
 * The aggregator's timeZoneOf: the tenant's zone from the cached directory. A store the cache does not know (or
 * knows as unknown) is looked up again in DynamoDB before its batch is refused, so a tenant created a moment ago
 * is seen. The first time this process finds a store's tenant it lifts the store's mark, so a tenant created
 * after a refusal is accepted by the clients again as soon as its first batch is replayed; and it publishes the
 * zone for the clients then, again when it changes, and again after half its expiry.
 */
export function tenantTimeZones(
  directory: Pick<TenantDirectory, 'tenant'>,
  marks: Pick<StoreMarks, 'clear' | 'zone'>,
  o: { maxSeen?: number; now?: () => number } = {},
) {
  const published = new Map<string, { zone: string; at: number }>();
  const now = o.now ?? Date.now;
  return async (store: string): Promise<string | undefined> => {
    const tenant = (await directory.tenant(store)) ?? (await directory.tenant(store, { fresh: true }));
    if (!tenant) return undefined;
    const last = published.get(store);
    if (!last) await marks.clear(store);
    if (!last || last.zone !== tenant.timeZone || now() - last.at >= STORE_ZONE_TTL_MS / 2) {
      await marks.zone(store, tenant.timeZone);
      if (!last && published.size >= (o.maxSeen ?? 100_000)) published.clear();
      published.set(store, { zone: tenant.timeZone, at: now() });
    }
    return tenant.timeZone;
  };
}

/**
 * Applies one events batch to the store's open bucket: roll up by the rules in the store's time zone (unless the
 * collector did: a `rows` batch), then one atomic, deduplicated Lua call, then its distinct-count members. A
 * redelivered batch (retry, stalled job, replay) is a no-op. With REDIS_WAIT_REPLICAS (`replicated`) the job completes
 * only once that many Redis replicas hold what it wrote: the apply and the store's work-set registration.
 */
export const eventsProcessor = (deps: EventsProcessorDeps) => {
  const warnings = deps.warnings ?? throttleLog(deps.log, { now: deps.now });
  return (job: Job, token?: string) => applyBatch(deps, warnings, job, token);
};

async function applyBatch(deps: EventsProcessorDeps, warnings: ThrottledLog, job: Job, token?: string) {
  const data = jobData(eventsJobSchema, job, 'events payload', () => deps.metrics.batchesRejected.inc({ reason: 'payload' }));
  const { store, batchId, events, rows, count } = data;
  const started = performance.now();
  const eventCount = rows ? count! : events!.length;

  // The store's Redis unavailable (on a Cluster its master down, loading, full, or its slot mid-migration: TRYAGAIN,
  // a loop of ASK redirections): the job waits as for the replicas, spending no attempt; its retry is a no-op for
  // what this try wrote (the apply's dedupe record, the REGISTER and the sketch members are idempotent), and comes
  // within the dedupe window or is refused (pastDedupeWindow). Any other error takes BullMQ's attempts.
  const redisUnavailable = (err: unknown): Promise<never> => {
    if (!isRedisUnavailable(err)) throw err;
    deps.metrics.batchWaits.inc({ reason: 'redis' });
    return delayJob(
      job,
      token,
      warnings,
      'events:redis',
      { jobId: job.id, store, batchId, err: (err as Error).message },
      'Redis not available now; batch waits',
    );
  };
  const hazard = pastDedupeWindow(job, data, deps);
  if (hazard) {
    // An earlier try may have applied the batch and then waited out the window on its registration (the work-set
    // shard's Redis unavailable): the store is registered first, idempotent (a store with nothing to seal is retired
    // by the sealer), so that the sealer seals its open bucket. Redis unavailable: the job waits for it as above
    // (nothing is applied either way); any other error is told in the refusal.
    let written = 'not applied (nothing written)';
    if (startedBefore(job)) {
      const failed = await deps.buckets.registerStore(store).then(
        () => undefined,
        (err: unknown) => (isRedisUnavailable(err) ? redisUnavailable(err) : (err as Error)),
      );
      written = failed
        ? `not applied again; registering the store in the work set, for what an earlier try may have applied, failed (${failed.message}): its next batch registers it`
        : 'not applied again; the store registered in the work set, so that the sealer seals what an earlier try may have applied';
    }
    deps.metrics.batchesRejected.inc({ reason: 'dedupe_window' });
    warnings.log(
      'error',
      'events:dedupe_window',
      { jobId: job.id, store, batchId },
      'batch past the dedupe window refused; it goes to the failed set',
    );
    throw new UnrecoverableError(
      `batch ${batchId}: ${hazard}; ${written}. If it was never applied and nothing was erased since, replay it with ` +
        '`npm run dlq -- replay events <id> --past-dedupe-window`',
    );
  }

  let tz: string | undefined;
  try {
    tz = await deps.timeZoneOf(store);
  } catch (err) {
    return delayJob(
      job,
      token,
      warnings,
      'events:time_zone',
      { jobId: job.id, store, err: (err as Error).message },
      'time zone unknown for now; batch waits',
    );
  }
  if (tz === undefined && (await deps.buckets.storeDeleted(store).catch(redisUnavailable)))
    return dropDeleted(deps, job, store, batchId, eventCount);
  if (tz === undefined) {
    // Never counted under a phantom store: the batch goes whole to the failed set, to be replayed once the
    // tenant exists (npm run dlq), and the clients refuse the store at once for a while.
    await deps.unknownStores?.mark(store).catch(redisUnavailable);
    deps.metrics.batchesRejected.inc({ reason: 'unknown_store' });
    warnings.log(
      'error',
      'events:unknown_store',
      { jobId: job.id, store, batchId },
      'batch for a store with no tenant refused; it goes to the failed set',
    );
    throw new UnrecoverableError(
      `unknown store ${store}: it has no tenant; batch ${batchId} not applied (nothing written). Create the tenant, then replay this job`,
    );
  }

  // A batch the collector rolled up (in the store's zone, by the same rules) goes to the script as it is; the
  // tenant check above still applies to it.
  let deltas;
  let rolled: ReadonlyArray<string | number> = [];
  let distinct: DistinctAdds | ReadonlyArray<string | number> | undefined;
  if (!rows) {
    try {
      distinct = new Map();
      deltas = rollup(deps.rules, store, tz, events!, new Map(), distinct);
    } catch (err) {
      if (err instanceof RulesError) {
        deps.metrics.batchesRejected.inc({ reason: 'rules' });
        throw new UnrecoverableError(`batch ${batchId}: ${err.message}`);
      }
      throw err;
    }
  } else {
    // Rolled up by other rules (a rolling deploy of RULES_FILE: the senders read the aggregators' fingerprint once a
    // minute): a metric these rules do not count is dropped and the rest applied, as these rules would roll the events.
    const kept = countedOnly(deps.rules, 'rows', rows);
    const keptDistinct = data.distinct && countedOnly(deps.rules, 'distinct', data.distinct);
    const dropped = [...kept.dropped, ...(keptDistinct?.dropped ?? [])];
    if (dropped.length > 0) {
      deps.metrics.fieldsDropped.inc(dropped.length);
      warnings.log(
        'warn',
        'events:rules',
        { jobId: job.id, store, batchId, dropped: dropped.slice(0, 3) },
        'rolled-up batch of other rules: the fields of metrics these rules do not count dropped, the rest applied',
      );
    }
    rolled = kept.flat;
    distinct = keptDistinct?.flat;
  }

  // Before the first write the wait for replicas covers: it fails when a Redis connection closed since (a failover).
  const mark = deps.replicated?.mark() ?? 0;
  let r;
  const applyOpts = { now: (deps.now ?? Date.now)(), dedupeTtlSeconds: deps.dedupeTtlSeconds };
  try {
    r = deltas
      ? await deps.buckets.apply(store, batchId, deltas, applyOpts)
      : await deps.buckets.applyRows(store, batchId, rolled, applyOpts);
  } catch (err) {
    // The apply script refused the whole batch before writing anything (a sum past 38 digits, a corrupt count, a key
    // of another type): retrying cannot help, so the batch goes whole to the failed set with the reason.
    if (err instanceof BucketsError) {
      deps.metrics.batchesRejected.inc({ reason: err.code === 'TALLY_ERR_SUM_OVERFLOW' ? 'overflow' : 'redis_state' });
      warnings.log(
        'error',
        `events:${err.code}`,
        { jobId: job.id, store, batchId, code: err.code, err: err.message },
        'batch refused whole; it goes to the failed set',
      );
      throw new UnrecoverableError(err.message);
    }
    return redisUnavailable(err);
  }
  if (r.deleted) return dropDeleted(deps, job, store, batchId, eventCount);
  // Counted at the apply: a retry after a wait below finds the batch applied, and counts a duplicate.
  if (r.applied) {
    deps.metrics.batchesApplied.inc();
    deps.metrics.eventsApplied.inc(eventCount);
  } else {
    deps.metrics.duplicateBatches.inc();
    // Throttled too: every retry after a wait for replicas (or Redis) finds its batch applied.
    warnings.log('info', 'events:duplicate', { jobId: job.id, store, batchId }, 'duplicate batch skipped');
  }
  // After the apply, duplicates too (a crash between the two is retried): the sealer's work set must see every
  // store whose open bucket has data, and a mark bumped after the apply keeps the store from being retired. The
  // bucket's seq is the earliest the sealer need visit it (0 for a duplicate: at its next tick); the gauges count the
  // store's open bucket from the apply's time on.
  await deps.buckets.registerStore(store, r.seq, applyOpts.now).catch(redisUnavailable);
  deps.crash?.('aggregator:after-apply');
  // Distinct counts after the apply, for a duplicate too (adding a member twice changes nothing): a batch the apply
  // refused adds none, and one whose job crashed or waited between the two adds them on its retry, which finds it
  // applied.
  if (distinct) await deps.buckets.sketches.add(store, distinct, applyOpts.now).catch(redisUnavailable);
  deps.metrics.applySeconds.observe((performance.now() - started) / 1000);
  try {
    await deps.replicated?.wait(store, mark, [workFence(deps.buckets, store)]);
  } catch (err) {
    if (!(err instanceof ReplicasBehindError)) throw err;
    deps.metrics.batchWaits.inc({ reason: 'replicas' });
    // Redis holds the batch, too few replicas do: the job stays (delayed), and its retry finds the batch applied.
    return delayJob(
      job,
      token,
      warnings,
      'events:replicas',
      { jobId: job.id, store, batchId, err: err.message },
      'Redis replicas behind; batch waits',
    );
  }
  return { applied: r.applied, seq: r.seq, events: eventCount };
}

/**
 * Delays the job without spending an attempt (BullMQ's moveToDelayed, then a DelayedError): 250-500 ms after its
 * first try, twice as long after each later one, at most MAX_WAIT_MS (jitter 0.5); logged throttled under `kind`.
 */
async function delayJob(
  job: Job,
  token: string | undefined,
  warnings: ThrottledLog,
  kind: string,
  fields: Record<string, unknown>,
  message: string,
): Promise<never> {
  const waits = Math.max(0, (job.attemptsStarted ?? 1) - 1);
  const delay = Math.min(MAX_WAIT_MS, 500 * 2 ** Math.min(waits, 10)) * (0.5 + Math.random() / 2);
  warnings.log('warn', kind, { ...fields, delayMs: Math.round(delay) }, message);
  await job.moveToDelayed(Date.now() + delay, token);
  throw new DelayedError();
}

const distinctMetrics = new WeakMap<CompiledRules, ReadonlySet<string>>();

/**
 * A rolled-up batch's `rows` or `distinct` (checked whole with the payload) without the fields whose metric is not one
 * of the rules' own of its kind (a counter's metric in rows, a distinct-count metric without a key in distinct), and
 * those fields, each with why; a row left with none is left out.
 */
function countedOnly(rules: CompiledRules, name: 'rows' | 'distinct', flat: ReadonlyArray<string | number>) {
  let sketches = distinctMetrics.get(rules);
  if (!sketches) {
    sketches = new Set(Object.keys(rules.rules.entities).flatMap((e) => rules.distinctOf(e).map((d) => d.metric)));
    distinctMetrics.set(rules, sketches);
  }
  const why = (attr: string) => {
    const known = rules.parseAttrMetric(attr);
    if (!known) return `metric "${attr}" is not one of the rules' metrics`;
    const isDistinct = sketches.has(known.metric);
    if (name === 'rows' && isDistinct) return `metric "${attr}" (${known.metric}) is a distinct count, not a counter's metric`;
    if (name === 'distinct' && (!isDistinct || known.sub !== undefined))
      return `metric "${attr}" is not a distinct-count metric of the rules`;
    return undefined;
  };
  // The hot path reads the fields once; only a batch with a field to drop is copied.
  const dropped = new Map<number, string>();
  for (let i = 0; i < flat.length; i += 2 + 2 * Number(flat[i + 1])) {
    for (let j = i + 2; j < i + 2 + 2 * Number(flat[i + 1]); j += 2) {
      const field = String(flat[j]);
      const problem = why(field.slice(field.indexOf('|') + 1));
      if (problem) dropped.set(j, `${name}.${j}: ${problem}`);
    }
  }
  if (dropped.size === 0) return { flat, dropped: [] };
  const kept: Array<string | number> = [];
  for (let i = 0; i < flat.length; i += 2 + 2 * Number(flat[i + 1])) {
    const fields: Array<string | number> = [];
    for (let j = i + 2; j < i + 2 + 2 * Number(flat[i + 1]); j += 2) if (!dropped.has(j)) fields.push(flat[j]!, flat[j + 1]!);
    if (fields.length > 0) kept.push(flat[i]!, fields.length / 2, ...fields);
  }
  return { flat: kept, dropped: [...dropped.values()] };
}

/**
 * Why a batch must not be applied now, or undefined. Its dedupe record lasts DEDUPE_WINDOW_SECONDS from its apply,
 * and the tombstones of a store deletion or visitor erasure that long from when they were made (each plus a slack,
 * libs/key-layout dedupe-window.ts, for the time from this check to the apply and the clocks' differences); the batch was
 * accepted before either (batchAcceptedAt). Past that, a batch started before (a retry, a stalled job, a dlq replay)
 * may have been applied with its record gone, and any batch may carry an erased visitor's events with the tombstone
 * gone: it is refused whole instead, to the failed set. The dlq tool's `--past-dedupe-window` marks it
 * (`pastDedupeWindow`) for the operator who knows it was never applied.
 */
function pastDedupeWindow(
  job: Job,
  data: { pastDedupeWindow?: true },
  deps: Pick<EventsProcessorDeps, 'now' | 'dedupeTtlSeconds'>,
): string | undefined {
  if (data.pastDedupeWindow) return undefined;
  const age = (deps.now ?? Date.now)() - batchAcceptedAt(job.timestamp, job.data);
  if (age < deps.dedupeTtlSeconds * 1000) return undefined;
  return (
    `accepted ${Math.round(age / 1000)} s ago, past the dedupe window (DEDUPE_WINDOW_SECONDS=${deps.dedupeTtlSeconds}): ` +
    (startedBefore(job)
      ? 'it was started before, and if that start applied it, applying it again would count it twice'
      : 'a store deletion or visitor erasure made since it was accepted may be forgotten, and it would count again')
  );
}

/** Whether an earlier try of the job may have applied its batch: a try before this one, or failures before a replay. */
const startedBefore = (job: Job): boolean =>
  (job.attemptsStarted ?? 1) > 1 || (job.attemptsMade ?? 0) > 0 || (job.stacktrace?.length ?? 0) > 0;

/**
 * A batch of a deleted store (its tombstone, kept for the dedupe window): dropped whole, not failed, so no copy of
 * its events stays in the failed set, and the store stays out of the work set.
 */
function dropDeleted(deps: EventsProcessorDeps, job: Job, store: string, batchId: string, events: number) {
  deps.metrics.batchesDropped.inc();
  deps.log.info({ jobId: job.id, store, batchId }, 'batch of a deleted store dropped');
  return { applied: false, deleted: true, events };
}
