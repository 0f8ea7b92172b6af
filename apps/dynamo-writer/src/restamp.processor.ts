import { metricsOn } from '@tally/observability';
import { jobData, maintenanceJobSchema } from '@tally/queues';
import { historyMonthsSetAt, restampRetention, RETENTION_SETTLE_MS, TenantError, type RestampOptions, type TenantDb } from '@tally/tenants';
import { DelayedError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

type RestampMetrics = ReturnType<typeof createRestampMetrics>;

export function createRestampMetrics(registry: Registry) {
  const { counter } = metricsOn(registry);
  return {
    runs: counter(
      'tally_retention_restamps_total',
      "Retention restamp jobs by outcome: done (the store's visitor items restamped: a Scan of the table), store_gone (the store was deleted meanwhile: nothing to do), postponed (its visitor history changed again less than RETENTION_SETTLE_MS before: the job waits)",
      ['outcome'],
    ),
    scanned: counter('tally_retention_restamp_scanned_items_total', 'Visitor items read by retention restamps'),
    restamped: counter(
      'tally_retention_restamped_items_total',
      'Visitor items whose TTL stamp a retention restamp changed (a write unit each)',
    ),
  };
}

export interface RestampDeps {
  db: TenantDb;
  /** The writer's rules: the entities whose rows are restamped (those whose key includes the visitor, as it stamps them). */
  rules: RestampOptions['rules'];
  metrics: RestampMetrics;
  log: Logger;
  /** How long after the last change of historyMonths a restamp may start. Default RETENTION_SETTLE_MS. */
  settleMs?: number;
  /** The clock (epoch ms). Default `Date.now`. */
  now?: () => number;
}

/**
 * Runs a job of the maintenance queue: `restamp-retention`, queued by libs/queues scheduleRetentionRestamp after a
 * change of a store's historyMonths (the query API's admin routes, `tenants set`), delayed RETENTION_SETTLE_MS.
 *
 * It starts only `settleMs` after the store's last change: the later of the job's own and the one the tenant item
 * records (historyMonthsSetAt: a change whose job was dropped because this one was already due). Earlier, it waits
 * again (the job is delayed until then; no attempt is used). Then restampRetention, without a wait of its own: it
 * reads the setting as it is now and walks the store's items (a Scan of the table). A store deleted meanwhile (or
 * being deleted) completes the job with nothing done. Any other error fails the attempt: the queue retries it with
 * backoff (QUEUE_SETTINGS), which is safe, the restamp being idempotent and resumable.
 */
export const restampProcessor = (deps: RestampDeps) => async (job: Job, token?: string) => {
  const { store, changedAt } = jobData(maintenanceJobSchema, job, 'maintenance payload');
  const log = deps.log.child({ jobId: job.id, store });
  const now = deps.now ?? Date.now;
  const settleMs = deps.settleMs ?? RETENTION_SETTLE_MS;

  const lastChange = Math.max(changedAt, (await historyMonthsSetAt(deps.db, store)) ?? 0);
  if (now() < lastChange + settleMs) {
    deps.metrics.runs.inc({ outcome: 'postponed' });
    log.info({ until: new Date(lastChange + settleMs).toISOString() }, 'visitor history changed since the restamp was queued; it waits');
    await job.moveToDelayed(lastChange + settleMs, token);
    throw new DelayedError();
  }
  try {
    const r = await restampRetention(deps.db, store, { settleMs: 0, now, rules: deps.rules });
    deps.metrics.runs.inc({ outcome: 'done' });
    deps.metrics.scanned.inc(r.scanned);
    deps.metrics.restamped.inc(r.restamped);
    log.info(r, 'restamped the visitor items of the store');
    return r;
  } catch (err) {
    if (!(err instanceof TenantError && err.code === 'TALLY_ERR_TENANT_NOT_FOUND')) throw err;
    deps.metrics.runs.inc({ outcome: 'store_gone' });
    log.info('store deleted since its visitor history changed; nothing to restamp');
    return { store, deleted: true };
  }
};
