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
  /** Stores worked on at once. Default 32. */
  concurrency?: number;
}

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
  const work = async ({ store, mark }: { store: string; mark: string }) => {
    // One round trip for a store with nothing to fold or flush (most stores in most ticks).
    const v = await deps.buckets.visit(store, { now, minAgeMs: Math.floor(deps.bucketMs / 2) });
    if (v.sealed !== undefined) {
      result.sealed++;
      deps.metrics.bucketsSealed.inc();
      deps.metrics.sealLag.set(Math.max(0, now - v.sealed - deps.bucketMs) / 1000);
    }
    let backlog = v.backlog;
    let due = v.due;
    if (v.sealedHead !== undefined) {
      const started = performance.now();
      const f = await deps.buckets.foldSealed(store, { now });
      deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
      result.folded += f.buckets;
      result.rows += f.rows;
      deps.metrics.bucketsFolded.inc(f.buckets);
      deps.metrics.rowsFolded.inc(f.rows);
      due = 1; // folded rows may be due now: look
    }
    if (due > 0) {
      const rows = await deps.buckets.dueRows(store, now);
      if (rows.length > 0) {
        await enqueueBulk(
          deps.queues,
          QUEUE.dynamoWrites,
          rows.map((r) => ({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } })),
        );
        result.flushes += rows.length;
        deps.metrics.flushesScheduled.inc(rows.length);
      }
    }
    if (v.sealedHead !== undefined) backlog = await deps.buckets.storeBacklog(store);
    published.push({ store, backlog, mark });
  };
  const concurrency = deps.concurrency ?? 32;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, active.length) }, async () => {
      while (next < active.length) await work(active[next++]!);
    }),
  );
  // The backlogs for the gauges, and the retirements, in a few calls for the whole shard.
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
