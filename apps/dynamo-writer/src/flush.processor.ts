import type { BucketStore } from '@tally/buckets';
import { PermanentWriteError, RetryableWriteError, writeRowWithSketches, type RowWriterDeps } from '@tally/dynamo';
import { metricsOn, throttleLog, type ThrottledLog } from '@tally/observability';
import { dynamoWriteJobSchema, isRedisUnavailable, jobData, ReplicasBehindError, type StoreFence } from '@tally/queues';
import { TenantsUnavailableError } from '@tally/tenants';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

type WriterMetrics = ReturnType<typeof createWriterMetrics>;

const WAIT_REASONS = ['dynamodb', 'redis', 'replicas'] as const;
type WaitReason = (typeof WAIT_REASONS)[number];

const WAIT_LOG: Record<WaitReason, string> = {
  dynamodb: 'DynamoDB not writable now; flush waits',
  redis: 'Redis not available now; flush waits',
  replicas: 'Redis replicas behind; flush waits',
};

export function createWriterMetrics(registry: Registry) {
  const { counter } = metricsOn(registry);
  const waits = counter(
    'tally_flush_waits_total',
    'Flush jobs delayed: DynamoDB throttled, was unreachable or refused the credentials, permissions or table (reason dynamodb), Redis did not answer (reason redis), or fewer Redis replicas than REDIS_WAIT_REPLICAS held the outbox in time (reason replicas)',
    ['reason'],
  );
  for (const reason of WAIT_REASONS) waits.inc({ reason }, 0);
  return {
    rowsFlushed: counter('tally_rows_flushed_total', 'Row flushes completed (outbox written and acked)'),
    emptyFlushes: counter('tally_flushes_empty_total', 'Flush jobs that found nothing to write'),
    entriesWritten: counter('tally_outbox_entries_written_total', 'Outbox entries applied to DynamoDB'),
    waits,
    permanentFailures: counter('tally_flush_failures_total', 'Flush jobs moved to the failed set'),
  };
}

export interface FlushDeps {
  buckets: BucketStore;
  dynamo: RowWriterDeps;
  metrics: WriterMetrics;
  log: Logger;
  /** Upper bound of the wait between attempts while DynamoDB is throttling or down. */
  maxBackoffMs: number;
  now?: () => number;
  crash?: (point: string) => void;
  /**
   * REDIS_WAIT_REPLICAS (libs/queues storeFence, on the store's fence key: on a Redis Cluster the store's master):
   * `mark` before the flush reads the outbox, `wait` before it writes to DynamoDB. The fence comes after the seals and
   * folds whose outbox entries the flush read, so DynamoDB never gets what a replica promoted after a crash of its
   * master would lack (docs/DESIGN.md invariant 1). Fewer replicas in time: ReplicasBehindError, and the flush waits
   * and retries as it does while DynamoDB throttles.
   */
  replicated?: StoreFence;
  /**
   * The TTL of the row's items (visitor rows, of every entity whose key includes the visitor, of a store with a history
   * retention; libs/tenants visitorExpiry).
   */
  expiryOf?: (store: string, pk: string) => Promise<RowWriterDeps['expiresAt']>;
  /**
   * Where the flushes' waits are logged: one line per reason (dynamodb, redis, replicas) and window, naming the first
   * job that waited, and on the reason's next line how many were not logged (`suppressed`); every wait is still
   * counted in tally_flush_waits_total. Default: one of the processor's own (throttleLog's 10 s window, on `now`).
   */
  warnings?: ThrottledLog;
}

/**
 * Flushes one row: reads its outbox (entries of completely folded buckets), writes one watermark-conditioned
 * UpdateItem per DynamoDB item, then acks the entries in one Redis step that also drops the row's cache.
 * A crash anywhere leaves entries in the outbox; the next run skips what DynamoDB already has by watermark.
 * Throttling and outages delay the job (it never fails for them): DynamoDB's (and refusals of the credentials,
 * permissions or table), and the Redis connection's (down, loading, failing over: isRedisUnavailable), since a job in
 * the failed set strands its row (its job id stays while the row is dirty, and BullMQ ignores a re-add under a failed
 * job's id). A permanent error fails it with the reason; any other error takes BullMQ's attempts. Waits are logged
 * throttled (deps.warnings): during an outage every due row's job waits, again at each retry, thousands a second.
 */
export const flushProcessor = (deps: FlushDeps) => {
  const warnings = deps.warnings ?? throttleLog(deps.log, { now: deps.now });
  return (job: Job, token?: string) => flushRow(deps, warnings, job, token);
};

async function flushRow(deps: FlushDeps, warnings: ThrottledLog, job: Job, token?: string) {
  const { store, pk } = jobData(dynamoWriteJobSchema, job, 'flush payload');
  const log = deps.log.child({ jobId: job.id, store, pk });
  const now = deps.now ?? Date.now;
  // Before the reads the wait for replicas covers: it fails when a Redis connection closed since (a failover).
  const mark = deps.replicated?.mark() ?? 0;
  try {
    const outbox = await deps.buckets.readOutbox(store, pk);
    if (outbox.entries.length === 0) {
      await deps.buckets.ackOutbox(store, pk, [], now());
      deps.metrics.emptyFlushes.inc();
      return { updates: 0, entries: 0 };
    }
    // The row's unwritten distinct-count sketches ride the counts' UpdateItems (docs/DESIGN.md "Unique visitors").
    const [live] = await deps.buckets.sketches.read(store, [pk]);
    const expiresAt = await deps.expiryOf?.(store, pk);
    // After the outbox and the live sketches are read, before any write to DynamoDB. (The sketch unions read during
    // the write add members to sets: a member added again after a failover changes nothing.)
    await deps.replicated?.wait(store, mark);
    const r = await writeRowWithSketches(
      {
        ...deps.dynamo,
        afterUpdate: deps.crash ? () => deps.crash!('writer:after-update') : deps.dynamo.afterUpdate,
        ...(expiresAt ? { expiresAt } : {}),
      },
      (groups, wantBlob) => deps.buckets.sketches.union(store, groups, wantBlob),
      pk,
      outbox.entries,
      live ?? [],
    );
    deps.crash?.('writer:before-ack');
    // Sketches first: a crash between the two acks leaves the outbox, so the flush runs again (a union is idempotent).
    await deps.buckets.sketches.ack(store, pk, r.sketchesWritten);
    const left = await deps.buckets.ackOutbox(
      store,
      pk,
      outbox.entries.map((e) => e.field),
      now(),
    );
    // The gauges' view of the store, right after the change, and a sealer visit at its next tick (which retires
    // the store when nothing is left, or sets its next visit time). Its read failing too: the row is written and
    // acked, so the job completes (the gauges catch up at the store's next visit).
    await (async () => deps.buckets.publishBacklog(store, await deps.buckets.storeBacklog(store), undefined, now()))().catch((err: Error) =>
      log.debug({ err: err.message }, 'backlog not published'),
    );
    deps.metrics.rowsFlushed.inc();
    deps.metrics.entriesWritten.inc(outbox.entries.length);
    log.debug(
      { updates: r.updates, sketchUpdates: r.sketchUpdates, conditionFailures: r.conditionFailures, entries: outbox.entries.length, left },
      'flushed row',
    );
    return { updates: r.updates, entries: outbox.entries.length };
  } catch (err) {
    const reason = waitReason(err);
    if (reason) {
      const waits = Math.max(0, (job.attemptsStarted ?? 1) - 1);
      const delay = Math.round(Math.min(deps.maxBackoffMs, 250 * 2 ** Math.min(waits, 20)) * (0.5 + Math.random() / 2));
      deps.metrics.waits.inc({ reason });
      warnings.log(
        'warn',
        `flush:${reason}`,
        { jobId: job.id, store, pk, err: (err as Error).message, delayMs: delay, waits },
        WAIT_LOG[reason],
      );
      await job.moveToDelayed(Date.now() + delay, token);
      throw new DelayedError();
    }
    if (err instanceof PermanentWriteError) {
      deps.metrics.permanentFailures.inc();
      log.error({ err: err.message }, 'row cannot be written; job goes to the failed set');
      throw new UnrecoverableError(`row ${pk}: ${err.message}`);
    }
    throw err;
  }
}

/** Why a flush that threw `err` waits (its job delayed, no attempt spent), or undefined when it does not. */
function waitReason(err: unknown): WaitReason | undefined {
  if (err instanceof ReplicasBehindError) return 'replicas';
  // The tenant's lookup (the visitor rows' TTL) fails when DynamoDB does: it waits alike.
  if (err instanceof RetryableWriteError || err instanceof TenantsUnavailableError) return 'dynamodb';
  // Read or ack of the outbox, read or union of the sketches: the store's Redis (a Cluster master) down or loading.
  if (isRedisUnavailable(err)) return 'redis';
  return undefined;
}
