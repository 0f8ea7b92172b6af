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
  /** Stores of the work set this tick visited (those whose next visit time had come). */
  stores: number;
  /** Stores that left the work set (nothing left to write). */
  retired: number;
  sealed: number;
  folded: number;
  rows: number;
  flushes: number;
}

/**
 * The time a store next needs a sealer visit, from what its visit left: at once (the next tick) while a sealed
 * bucket is left unfolded; else the earlier of the time its open bucket can be sealed (when it has data) and its
 * earliest flush due time (a row whose flush job is pending stays due until the writer acks it, so the store is
 * visited each tick until then). Undefined when it has nothing of either (then it is retired, or left as it is).
 */
function nextVisit(
  now: number,
  minAgeMs: number,
  left: { sealedHead: number | undefined; oldestUnfolded: number | undefined; nextDue: number | undefined },
): number | undefined {
  if (left.sealedHead !== undefined) return now;
  const times = [left.oldestUnfolded === undefined ? Infinity : left.oldestUnfolded + minAgeMs, left.nextDue ?? Infinity];
  const t = Math.min(...times);
  return Number.isFinite(t) ? t : undefined;
}

/**
 * One sealer tick over one work-set shard: only the stores of the work set (those with something not yet written)
 * whose next visit time has come, read in one call, in bounded parallel batches. For each: seal the open bucket when it is due, fold sealed buckets into row outboxes
 * strictly in bucket order, enqueue a flush job for each row whose policy says it is due (read from the
 * store's due-time zset: rows not due are never read), then publish the store's backlog for the gauges and
 * retire it from the work set when nothing is left and no batch was applied meanwhile, else set its next visit time
 * (nextVisit; only ever earlier when a batch was applied meanwhile: the apply's own registration may need it
 * sooner). A store with nothing due costs a tick nothing.
 * Safe with several aggregator replicas: sealing waits for half a bucket since the last seal, folds are
 * idempotent, and flush job ids are deterministic (row + time of its oldest unwritten count), so a row has
 * one pending flush job however many ticks see it due.
 */
export async function sealTick(deps: SealDeps, shard = 0): Promise<SealTickResult> {
  const now = (deps.now ?? Date.now)();
  const result: SealTickResult = { stores: 0, retired: 0, sealed: 0, folded: 0, rows: 0, flushes: 0 };
  const minAgeMs = Math.floor(deps.bucketMs / 2);
  const active = await deps.buckets.dueStores(shard, now);
  result.stores = active.length;
  const published: Array<{ store: string; backlog: StoreBacklog; mark: string; visitAt: number | undefined }> = [];
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
    const v = await deps.buckets.visit(store, { now, minAgeMs });
    if (v.sealed !== undefined) {
      result.sealed++;
      deps.metrics.bucketsSealed.inc();
      deps.metrics.sealLag.set(Math.max(0, now - v.sealed - deps.bucketMs) / 1000);
    }
    let backlog = v.backlog;
    let due = v.dueRows;
    let left: { sealedHead: number | undefined; nextDue: number | undefined } = v;
    if (v.sealedHead !== undefined) {
      const started = performance.now();
      const fresh =
        v.sealedRows && v.sealed === v.sealedHead ? await deps.buckets.foldVisited(store, v.sealed, v.sealedRows, now) : undefined;
      let f: { buckets: number; rows: number };
      if (fresh) {
        f = { buckets: 1, rows: fresh.rows };
        backlog = fresh.backlog;
        due = fresh.due;
        left = fresh;
      } else {
        // Older sealed buckets, or a big one: the general fold, then a fresh read of what is left.
        f = await deps.buckets.foldSealed(store, { now });
        backlog = await deps.buckets.storeBacklog(store);
        due = await deps.buckets.dueRows(store, now);
        left = { sealedHead: now, nextDue: undefined }; // the rare path: visited again next tick
      }
      deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
      result.folded += f.buckets;
      result.rows += f.rows;
      deps.metrics.bucketsFolded.inc(f.buckets);
      deps.metrics.rowsFolded.inc(f.rows);
    }
    for (const r of due) flushes.push({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } });
    if (flushes.length >= FLUSH_JOBS_PER_CALL) await enqueueFlushes();
    published.push({ store, backlog, mark, visitAt: nextVisit(now, minAgeMs, { ...left, oldestUnfolded: backlog.oldestUnfolded }) });
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
