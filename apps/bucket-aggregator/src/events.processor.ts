import { BucketsError, type BucketStore } from '@tally/buckets';
import { eventsJobSchema } from '@tally/queues';
import { rollup, rollupDistinct, RulesError, type CompiledRules } from '@tally/schema';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { AggregatorMetrics } from './aggregator-metrics';

export interface EventsProcessorDeps {
  buckets: BucketStore;
  rules: CompiledRules;
  /** The store's IANA time zone; throws when it cannot be known right now (tenant directory unreachable). */
  timeZoneOf: (store: string) => Promise<string>;
  dedupeTtlSeconds: number;
  metrics: AggregatorMetrics;
  log: Logger;
  now?: () => number;
  /** Test-only crash points (TALLY_CRASH_POINT). */
  crash?: (point: string) => void;
}

/** Longest wait between attempts while the time zone cannot be resolved; the job never fails for it. */
const MAX_WAIT_MS = 30_000;

/**
 * Applies one events batch to the store's open bucket: roll up by the rules in the store's time zone, then
 * one atomic, deduplicated Lua call. A redelivered batch (retry, stalled job, replay) is a no-op.
 */
export const eventsProcessor = (deps: EventsProcessorDeps) => async (job: Job, token?: string) => {
  const parsed = eventsJobSchema.safeParse(job.data);
  if (!parsed.success) {
    deps.metrics.batchesRejected.inc({ reason: 'payload' });
    const issue = parsed.error.issues[0]!;
    throw new UnrecoverableError(`invalid events payload: ${issue.path.join('.')}: ${issue.message}`);
  }
  const { store, batchId, events } = parsed.data;
  const started = performance.now();

  let tz: string;
  try {
    tz = await deps.timeZoneOf(store);
  } catch (err) {
    const waits = Math.max(0, (job.attemptsStarted ?? 1) - 1);
    const delay = Math.min(MAX_WAIT_MS, 500 * 2 ** Math.min(waits, 10)) * (0.5 + Math.random() / 2);
    deps.log.warn({ jobId: job.id, store, err: (err as Error).message, delayMs: Math.round(delay) }, 'time zone unknown for now; batch waits');
    await job.moveToDelayed(Date.now() + delay, token);
    throw new DelayedError();
  }

  let deltas;
  let distinct;
  try {
    deltas = rollup(deps.rules, store, tz, events);
    distinct = rollupDistinct(deps.rules, store, tz, events);
  } catch (err) {
    if (err instanceof RulesError) {
      deps.metrics.batchesRejected.inc({ reason: 'rules' });
      throw new UnrecoverableError(`batch ${batchId}: ${err.message}`);
    }
    throw err;
  }

  // Distinct counts first, duplicates too: adding a member twice changes nothing, and a crash between this and the
  // apply is retried by the job (the apply's dedupe record is written only with the counts).
  await deps.buckets.sketches.add(store, distinct);
  let r;
  try {
    r = await deps.buckets.apply(store, batchId, deltas, { now: (deps.now ?? Date.now)(), dedupeTtlSeconds: deps.dedupeTtlSeconds });
  } catch (err) {
    // The apply script refused the whole batch before writing anything (a sum past 38 digits, a corrupt count):
    // retrying cannot help, so the batch goes whole to the failed set with the reason.
    if (err instanceof BucketsError) {
      deps.metrics.batchesRejected.inc({ reason: err.code === 'TALLY_ERR_SUM_OVERFLOW' ? 'overflow' : 'redis_state' });
      deps.log.error({ jobId: job.id, store, batchId, code: err.code, err: err.message }, 'batch refused whole; it goes to the failed set');
      throw new UnrecoverableError(err.message);
    }
    throw err;
  }
  // After the apply, duplicates too (a crash between the two is retried): the sealer's work set must see every
  // store whose open bucket has data, and a mark bumped after the apply keeps the store from being retired.
  await deps.buckets.registerStore(store);
  deps.crash?.('aggregator:after-apply');
  if (r.applied) {
    deps.metrics.batchesApplied.inc();
    deps.metrics.eventsApplied.inc(events.length);
  } else {
    deps.metrics.duplicateBatches.inc();
    deps.log.info({ jobId: job.id, store, batchId }, 'duplicate batch skipped');
  }
  deps.metrics.applySeconds.observe((performance.now() - started) / 1000);
  return { applied: r.applied, seq: r.seq, events: events.length };
};
