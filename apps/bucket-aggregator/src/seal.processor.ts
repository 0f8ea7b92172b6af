import type { BucketStore } from '@tally/buckets';
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
  /** Stores visited per batch: their VISITs go in one round trip per Redis node, then their FOLDs in one more. Default 500. */
  batchStores?: number;
  /** Batches worked on at once. Default 4. */
  concurrency?: number;
}

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
 * whose next visit time has come, read in one call, in batches (a few at once) whose scripts are pipelined: one round
 * trip per Redis node visits a batch's stores, one more folds the buckets those visits sealed, and one publishes
 * what is left (announcing the seqs the seals set to the other instances: BucketStore.followEpochs). For each store:
 * seal the open bucket when it is due, fold sealed buckets into row outboxes strictly in bucket order, enqueue a
 * flush job for each row whose policy says it is due (read from the store's due-time zset: rows not due are never
 * read), then publish the store's backlog for the gauges and retire it from the work set when nothing is left and
 * no batch was applied meanwhile, else set its next visit time (nextVisit; only ever earlier when a batch was
 * applied meanwhile: the apply's own registration may need it sooner). A store with nothing due costs a tick nothing.
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
  const folded = (f: { buckets: number; rows: number }) => {
    result.folded += f.buckets;
    result.rows += f.rows;
    deps.metrics.bucketsFolded.inc(f.buckets);
    deps.metrics.rowsFolded.inc(f.rows);
  };
  const work = async (batch: ReadonlyArray<{ store: string; mark: string }>) => {
    // One round trip per Redis node for the batch's visits (VISIT seals, and reports the backlog and the due rows),
    // and one more for the folds of the buckets they sealed (FOLD finishes each and reports the same).
    const visits = await deps.buckets.visitMany(
      batch.map((b) => b.store),
      { now, minAgeMs },
    );
    const left = visits.map((v) => ({
      backlog: v.backlog,
      due: v.dueRows,
      sealedHead: v.sealedHead,
      nextDue: v.nextDue,
    }));
    const fresh: number[] = [];
    const older: number[] = [];
    visits.forEach((v, i) => {
      if (v.sealed !== undefined) {
        result.sealed++;
        deps.metrics.bucketsSealed.inc();
        deps.metrics.sealLag.set(Math.max(0, now - v.sealed - deps.bucketMs) / 1000);
      }
      if (v.sealedHead === undefined) return;
      if (v.sealedRows && v.sealed === v.sealedHead) fresh.push(i);
      else older.push(i);
    });
    if (fresh.length > 0) {
      const started = performance.now();
      const reports = await deps.buckets.foldVisitedMany(
        fresh.map((i) => ({ store: batch[i]!.store, seq: visits[i]!.sealed!, pks: visits[i]!.sealedRows! })),
        now,
      );
      const seconds = (performance.now() - started) / 1000; // each store's fold took the batch's round trip
      reports.forEach((r, k) => {
        if (!r) older.push(fresh[k]!);
        else {
          left[fresh[k]!] = r;
          folded({ buckets: 1, rows: r.rows });
          deps.metrics.foldSeconds.observe(seconds);
        }
      });
    }
    // Older sealed buckets, or a big one: the general fold, then a fresh read of what is left (visited again next tick).
    await Promise.all(
      older.map(async (i) => {
        const store = batch[i]!.store;
        const started = performance.now();
        folded(await deps.buckets.foldSealed(store, { now }));
        left[i] = {
          backlog: await deps.buckets.storeBacklog(store),
          due: await deps.buckets.dueRows(store, now),
          sealedHead: now,
          nextDue: undefined,
        };
        deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
      }),
    );
    const flushes = batch.flatMap(({ store }, i) =>
      left[i]!.due.map((r) => ({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } })),
    );
    if (flushes.length > 0) {
      await enqueueBulk(deps.queues, QUEUE.dynamoWrites, flushes);
      result.flushes += flushes.length;
      deps.metrics.flushesScheduled.inc(flushes.length);
    }
    // The batch's backlogs for the gauges, its retirements and the seqs its seals set (announced to the other
    // instances: followEpochs), in one call (after the flush jobs exist: a store is retired only with nothing left
    // to write).
    const published = batch.map(({ store, mark }, i) => {
      const l = left[i]!;
      const visitAt = nextVisit(now, minAgeMs, { ...l, oldestUnfolded: l.backlog.oldestUnfolded });
      return { store, backlog: l.backlog, mark, visitAt, epoch: visits[i]!.sealed === undefined ? undefined : visits[i]!.epoch };
    });
    for (const r of await deps.buckets.publishBacklogs(shard, published)) if (r === 'retired') result.retired++;
  };
  const size = deps.batchStores ?? 500;
  const batches = Array.from({ length: Math.ceil(active.length / size) }, (_, i) => active.slice(i * size, (i + 1) * size));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(deps.concurrency ?? 4, batches.length) }, async () => {
      while (next < batches.length) await work(batches[next++]!);
    }),
  );
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
