import type { BucketStore, StoreBacklog } from '@tally/buckets';
import { enqueueBulk, jobIdFor, QUEUE, sealJobSchema, type QUEUE_SHARDS, type TallyQueues } from '@tally/queues';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { AggregatorMetrics, Backlog } from './aggregator-metrics';

export interface SealDeps {
  buckets: BucketStore;
  queues: Pick<TallyQueues, 'dynamo-writes'> & Partial<Pick<TallyQueues, typeof QUEUE_SHARDS>>;
  bucketMs: number;
  metrics: AggregatorMetrics;
  log: Logger;
  now?: () => number;
  /** Stores worked on at once. Default 64. */
  concurrency?: number;
}

/** Flush jobs the sealer gathers (over stores) before enqueueing them in one call. */
const FLUSH_JOBS_PER_CALL = 500;

export interface SealTickResult {
  /** Stores in the work set this tick visited. */
  stores: number;
  /** Stores that left the work set (nothing left to write). */
  retired: number;
  sealed: number;
  folded: number;
  rows: number;
  flushes: number;
}

/**
 * One sealer tick over one work-set shard: only the stores with something not yet written (the work set), in
 * bounded parallel batches. For each: seal the open bucket when it is due, fold sealed buckets into row outboxes
 * strictly in bucket order, enqueue a flush job for each row whose policy says it is due (read from the
 * store's due-time zset: rows not due are never read), then publish the store's backlog for the gauges and
 * retire it from the work set when nothing is left and no batch was applied meanwhile.
 * Safe with several aggregator replicas: sealing waits for half a bucket since the last seal, folds are
 * idempotent, and flush job ids are deterministic (row + time of its oldest unwritten count), so a row has
 * one pending flush job however many ticks see it due.
 */
export async function sealTick(deps: SealDeps, shard = 0): Promise<SealTickResult> {
  const now = (deps.now ?? Date.now)();
  const result: SealTickResult = { stores: 0, retired: 0, sealed: 0, folded: 0, rows: 0, flushes: 0 };
  const active = await deps.buckets.activeStores(shard);
  result.stores = active.length;
  const published: Array<{ store: string; backlog: StoreBacklog; mark: string }> = [];
  let flushes: Array<{ data: { store: string; pk: string }; opts: { jobId: string } }> = [];
  const enqueueFlushes = async () => {
    const jobs = flushes;
    flushes = [];
    if (jobs.length === 0) return;
    await enqueueBulk(deps.queues, QUEUE.dynamoWrites, jobs);
    result.flushes += jobs.length;
    deps.metrics.flushesScheduled.inc(jobs.length);
  };
  const work = async ({ store, mark }: { store: string; mark: string }) => {
    // One round trip for a store with nothing to fold (most stores in most ticks): VISIT seals, and reports the
    // backlog and the due rows. One or two more when it sealed a bucket: the fold, which reports the same.
    const v = await deps.buckets.visit(store, { now, minAgeMs: Math.floor(deps.bucketMs / 2) });
    if (v.sealed !== undefined) {
      result.sealed++;
      deps.metrics.bucketsSealed.inc();
      deps.metrics.sealLag.set(Math.max(0, now - v.sealed - deps.bucketMs) / 1000);
    }
    let backlog = v.backlog;
    let due = v.dueRows;
    if (v.sealedHead !== undefined) {
      const started = performance.now();
      const fresh = v.sealedRows && v.sealed === v.sealedHead ? await deps.buckets.foldVisited(store, v.sealed, v.sealedRows, now) : undefined;
      let f: { buckets: number; rows: number };
      if (fresh) {
        f = { buckets: 1, rows: fresh.rows };
        backlog = fresh.backlog;
        due = fresh.due;
      } else {
        // Older sealed buckets, or a big one: the general fold, then a fresh read of what is left.
        f = await deps.buckets.foldSealed(store, { now });
        backlog = await deps.buckets.storeBacklog(store);
        due = await deps.buckets.dueRows(store, now);
      }
      deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
      result.folded += f.buckets;
      result.rows += f.rows;
      deps.metrics.bucketsFolded.inc(f.buckets);
      deps.metrics.rowsFolded.inc(f.rows);
    }
    for (const r of due) flushes.push({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } });
    if (flushes.length >= FLUSH_JOBS_PER_CALL) await enqueueFlushes();
    published.push({ store, backlog, mark });
  };
  const concurrency = deps.concurrency ?? 64;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, active.length) }, async () => {
      while (next < active.length) await work(active[next++]!);
    }),
  );
  await enqueueFlushes();
  // The backlogs for the gauges, and the retirements, in a few calls for the whole shard (after the flush jobs
  // exist: a store is retired only with nothing left to write).
  for (const r of await deps.buckets.publishBacklogs(shard, published)) if (r === 'retired') result.retired++;
  if (result.sealed || result.flushes) deps.log.debug({ shard, ...result }, 'sealer tick');
  return result;
}

export const sealProcessor = (deps: SealDeps) => async (job: Job) => {
  const parsed = sealJobSchema.safeParse(job.data);
  if (!parsed.success || parsed.data.shard >= deps.buckets.shards) {
    throw new UnrecoverableError(`invalid seal job: ${JSON.stringify(job.data)} (QUEUE_SHARDS=${deps.buckets.shards})`);
  }
  const started = performance.now();
  const r = await sealTick(deps, parsed.data.shard);
  deps.metrics.sealTickSeconds.observe((performance.now() - started) / 1000);
  return r;
};

/** The backlog of unwritten counts over every store, for the scrape-time gauges: one bounded read per shard. */
export async function readBacklog(buckets: BucketStore, now: number): Promise<Backlog> {
  const b = await buckets.backlog();
  const oldest = Math.min(b.oldestDirty ?? Infinity, b.oldestUnfolded ?? Infinity);
  return {
    dirtyRows: b.rows,
    outboxEntries: b.entries,
    oldestUnfoldedAgeSeconds: b.oldestUnfolded === undefined ? 0 : Math.max(0, now - b.oldestUnfolded) / 1000,
    flushLagSeconds: Number.isFinite(oldest) ? Math.max(0, now - oldest) / 1000 : 0,
  };
}
