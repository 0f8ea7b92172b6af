import { jobIdFor } from './job-id';
import { QUEUE } from './names';
import { enqueue, type TallyQueues } from './queues';

/** The deduplication id of a store's restamps: one pending (and one running) per store. */
const restampDeduplicationId = (store: string) => jobIdFor('restamp', store);

/**
 * Schedules the restamp of `store`'s visitor items after a change of its historyMonths at `changedAt` (epoch ms): a
 * `restamp-retention` job on the maintenance queue, delayed `settleMs` (libs/tenants RETENTION_SETTLE_MS: the wait
 * is in the queue, so it survives any crash), that the dynamo-writer runs (libs/tenants restampRetention). Its job
 * id names the store and the change (the same change added twice is one job). A store's jobs are coalesced by
 * BullMQ's deduplication (debounce: `replace` and `keepLastIfActive`); when this is added and the store has
 * - no restamp pending: this one is added, due `settleMs` from now;
 * - one delayed (not due yet, or waiting to retry after an error): that one is replaced by this one, due `settleMs`
 *   from now, so the pending job is always the last change's, due `settleMs` after it;
 * - one running: this one is kept (only the last such) and added when the running one ends, due `settleMs` later;
 * - one due and waiting for a worker: this one is dropped, and that one, when it runs, finds this change recorded on
 *   the tenant (historyMonthsSetAt) and waits again until `settleMs` after it (the writer's restamp.processor.ts).
 * So however often the setting changes, a store has at most one restamp pending and one running, and every restamp
 * starts `settleMs` or more after the last change. Returns when it is due at the earliest (`changedAt + settleMs`).
 */
export async function scheduleRetentionRestamp(
  queues: Pick<TallyQueues, typeof QUEUE.maintenance>,
  store: string,
  changedAt: number,
  settleMs: number,
): Promise<number> {
  await enqueue(
    queues,
    QUEUE.maintenance,
    { kind: 'restamp-retention', store, changedAt },
    {
      jobId: jobIdFor('restamp', store, changedAt),
      delay: settleMs,
      deduplication: { id: restampDeduplicationId(store), replace: true, keepLastIfActive: true },
    },
  );
  return changedAt + settleMs;
}
