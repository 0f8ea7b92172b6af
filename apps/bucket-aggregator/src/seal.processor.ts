import type { BucketStore } from '@tally/buckets';
import { enqueueBulk, jobIdFor, QUEUE, type TallyQueues } from '@tally/queues';
import type { Logger } from 'pino';
import type { AggregatorMetrics, Backlog } from './aggregator-metrics';

export interface SealDeps {
  buckets: BucketStore;
  queues: Pick<TallyQueues, 'dynamo-writes'>;
  bucketMs: number;
  metrics: AggregatorMetrics;
  log: Logger;
  now?: () => number;
}

export interface SealTickResult {
  sealed: number;
  folded: number;
  rows: number;
  flushes: number;
}

/**
 * One sealer tick, for every store: seal the open bucket when it is due, fold sealed buckets into row
 * outboxes strictly in bucket order, then enqueue a flush job for each row whose policy says it is due.
 * Safe with several aggregator replicas: sealing waits for half a bucket since the last seal, folds are
 * idempotent, and flush job ids are deterministic (row + time of its oldest unwritten count), so a row has
 * one pending flush job however many ticks see it due.
 */
export async function sealTick(deps: SealDeps): Promise<SealTickResult> {
  const now = (deps.now ?? Date.now)();
  const result: SealTickResult = { sealed: 0, folded: 0, rows: 0, flushes: 0 };
  for (const store of await deps.buckets.stores()) {
    const sealed = await deps.buckets.seal(store, { now, minAgeMs: Math.floor(deps.bucketMs / 2) });
    if (sealed !== undefined) {
      result.sealed++;
      deps.metrics.bucketsSealed.inc();
      deps.metrics.sealLag.set(Math.max(0, now - sealed - deps.bucketMs) / 1000);
    }
    const started = performance.now();
    const f = await deps.buckets.foldSealed(store, { now });
    deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
    result.folded += f.buckets;
    result.rows += f.rows;
    deps.metrics.bucketsFolded.inc(f.buckets);
    deps.metrics.rowsFolded.inc(f.rows);

    const due = await deps.buckets.dueRows(store, now);
    if (due.length > 0) {
      await enqueueBulk(
        deps.queues,
        QUEUE.dynamoWrites,
        due.map((r) => ({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } })),
      );
      result.flushes += due.length;
      deps.metrics.flushesScheduled.inc(due.length);
    }
  }
  if (result.sealed || result.flushes) deps.log.debug({ ...result }, 'sealer tick');
  return result;
}

export const sealProcessor = (deps: SealDeps) => async () => sealTick(deps);

/** The backlog of unwritten counts over every store, for the scrape-time gauges. */
export async function readBacklog(buckets: BucketStore, now: number): Promise<Backlog> {
  let oldestDirty = Infinity;
  let oldestUnfolded = Infinity;
  let dirtyRows = 0;
  let outboxEntries = 0;
  for (const store of await buckets.stores()) {
    const od = await buckets.oldestDirty(store);
    if (od !== undefined) oldestDirty = Math.min(oldestDirty, od);
    const ou = await buckets.oldestUnfolded(store);
    if (ou !== undefined) oldestUnfolded = Math.min(oldestUnfolded, ou);
    dirtyRows += await buckets.dirtyCount(store);
    outboxEntries += await buckets.outboxEntries(store);
  }
  const oldest = Math.min(oldestDirty, oldestUnfolded);
  return {
    dirtyRows,
    outboxEntries,
    oldestUnfoldedAgeSeconds: Number.isFinite(oldestUnfolded) ? Math.max(0, now - oldestUnfolded) / 1000 : 0,
    flushLagSeconds: Number.isFinite(oldest) ? Math.max(0, now - oldest) / 1000 : 0,
  };
}
