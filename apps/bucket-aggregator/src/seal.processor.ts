import type { BucketStore, DueRow, MoveHold, StoreBacklog } from '@tally/buckets';
import { throttleLog, type ThrottledLog } from '@tally/observability';
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
  /**
   * How long a row handed out for a flush stays leased (VisitOptions.leaseMs): later ticks skip it while its job is
   * pending (DynamoDB down, writers behind), so their cost follows new work, not the unwritten backlog; the writer's
   * ack ends the lease, and a row whose job was lost (a crash before the enqueue, a failed job purged) is handed out
   * again when it ends. Default FLUSH_LEASE_TICKS ticks (bucketMs each: a lease shorter than a tick would save none).
   */
  flushLeaseMs?: number;
  /**
   * Where the stores a tick sets aside are logged (one line per stage and kind of error and window): shared by a
   * sealer's ticks (sealProcessor's, with a minute's window). Default: one of the tick's own.
   */
  warnings?: ThrottledLog;
  /**
   * The work-set shards past QUEUE_SHARDS (it was lowered) that each tick drains first (sealProcessor gives its ticks
   * one); none: they are not looked for.
   */
  leftovers?: LeftoverShards;
  /**
   * REDIS_WAIT_REPLICAS: a store moved into its own work-set shard (BucketStore.moveStores, drainShard) leaves its old
   * shard only once replicas hold its registration in the new one (on a Redis Cluster the new shard's master), so a
   * failover of that master cannot leave it in no shard; when the wait fails it stays in both (harmless), and is
   * moved again at a later tick.
   */
  hold?: MoveHold;
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
  /** Stores set aside: their visit, fold or publish failed (visited again at the next tick). */
  failed: number;
  /**
   * Stores moved into their own work-set shard (QUEUE_SHARDS changed since they were registered): from the shards
   * past QUEUE_SHARDS (deps.leftovers), and the due stores of this shard that are another's (not visited here).
   */
  moved: number;
  /** The tick was of a shard past this process's QUEUE_SHARDS: nothing done (sealProcessor). */
  skipped?: true;
}

const noTick = (): SealTickResult => ({ stores: 0, retired: 0, sealed: 0, folded: 0, rows: 0, flushes: 0, failed: 0, moved: 0 });

/** Sealer ticks (BUCKET_SECONDS each) a row handed out for a flush stays leased by default: SealDeps.flushLeaseMs. */
export const FLUSH_LEASE_TICKS = 4;

/** How often a sealer process looks for work-set shards past QUEUE_SHARDS while it knows of none (ms). */
export const LEFTOVER_CHECK_MS = 5 * 60_000;

/** Stores a tick moves out of the shards past QUEUE_SHARDS at most (the rest at the next ticks). */
const LEFTOVER_STORES_PER_TICK = 10_000;

/**
 * The work-set shards past QUEUE_SHARDS that still hold keys (QUEUE_SHARDS was lowered, and no sealer ticks them),
 * as one sealer process knows them: looked for (BucketStore.leftoverShards: one EXISTS per shard up to QUEUE_SHARDS'
 * maximum, all sent at once) at its first tick and then every LEFTOVER_CHECK_MS (5 minutes) while none is known, by the
 * ticks' clock; a tick costs nothing more in between. While some are known each tick drains them first
 * (BucketStore.drainShard: their stores are moved into their own shards, at most 10,000 a tick, due at once there,
 * and a shard left empty loses its stats, totals and oldest times too), so a store moved into the ticked shard is
 * visited by the same tick. A process drains in one tick at a time; several processes may drain at once (a move is
 * safe to repeat).
 */
class LeftoverShards {
  private checkedAt: number | undefined;
  private pending: number[] = [];
  private running = false;

  /** Looks for leftover shards when it is time, and drains those known. Returns the stores moved. */
  async drain(deps: Pick<SealDeps, 'buckets' | 'log' | 'warnings' | 'hold'>, now: number): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      // Looked for at the first tick, then every LEFTOVER_CHECK_MS (a clock that went back counts as time up), also
      // while some are being drained; the time is taken first, so a look that fails is not sent again at every tick.
      if (this.checkedAt === undefined || now < this.checkedAt || now - this.checkedAt >= LEFTOVER_CHECK_MS) {
        this.checkedAt = now;
        const fresh = (await deps.buckets.leftoverShards()).filter((s) => !this.pending.includes(s));
        if (fresh.length > 0) {
          this.pending.push(...fresh);
          deps.log.warn(
            { shards: fresh, queueShards: deps.buckets.shards },
            'work-set shards past QUEUE_SHARDS hold stores or gauges: moving their stores into their own shards',
          );
        }
      }
      if (this.pending.length === 0) return 0;
      let moved = 0;
      for (const shard of [...this.pending]) {
        const r = await deps.buckets.drainShard(shard, now, LEFTOVER_STORES_PER_TICK - moved, { hold: deps.hold });
        moved += r.moved;
        if (r.errors.length > 0)
          (deps.warnings ?? throttleLog(deps.log)).log(
            'warn',
            'seal:leftover-move',
            { shard, stores: r.errors.length, err: r.errors[0] },
            'stores of a work-set shard past QUEUE_SHARDS not moved (tried again at the next tick)',
          );
        if (r.empty) {
          this.pending = this.pending.filter((s) => s !== shard);
          deps.log.info({ shard, queueShards: deps.buckets.shards }, 'work-set shard past QUEUE_SHARDS drained and deleted');
        }
        if (moved >= LEFTOVER_STORES_PER_TICK) break;
      }
      return moved;
    } finally {
      this.running = false;
    }
  }
}

/**
 * The time a store next needs a sealer visit, from what its visit left: at once (the next tick) while a sealed
 * bucket is left unfolded; else the earlier of the time its open bucket can be sealed (when it has data) and its
 * earliest flush due time (a row whose flush job is pending is leased: due when its lease ends, unless the writer's
 * ack reschedules it and asks for a visit). Undefined when it has nothing of either (then it is retired, or left as
 * it is).
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
 * seal the open bucket when it is due, fold sealed buckets into row outboxes strictly in bucket order, publish the
 * store's backlog for the gauges and retire it from the work set when nothing is left and no batch was applied
 * meanwhile, else set its next visit time (nextVisit; only ever earlier when a batch was applied meanwhile: the
 * apply's own registration may need it sooner), then enqueue a flush job for each row whose policy says it is due
 * (read from the store's due-time zset: rows not due are never read; a writer's ack of one asks for a visit at the
 * next tick, after that publish). A store with nothing due costs a tick nothing.
 * A due store that is another shard's (QUEUE_SHARDS changed since it was registered here) is not visited but moved
 * into its own shard (BucketStore.moveStores), which visits it; with deps.leftovers the tick first drains the
 * shards past QUEUE_SHARDS (LeftoverShards), which no tick visits.
 * `dueAt`: when the tick was due (its job's scheduled time); a tick that seals a bucket sets tally_seal_lag_seconds
 * to how late it ran after that (not to the sealed bucket's age, which is the store's idle time when a store that was
 * idle for hours gets a batch into the bucket opened by its last seal).
 * Safe with several aggregator replicas: sealing waits for half a bucket since the last seal, folds are
 * idempotent, and flush job ids are deterministic (row + time of its oldest unwritten count), so a row has
 * one pending flush job however many ticks see it due. A row handed out is leased (deps.flushLeaseMs): the ticks
 * until its lease ends skip it, unless the writer's ack or a fold reschedules it. Every row leased is enqueued by
 * the tick that leased it, unless the enqueue fails or the sealer stops before it: such a row waits for its lease to
 * end (then it is handed out again). A store whose visit, fold or publish fails (a corrupt key, a Redis node
 * refusing its writes) is set aside, logged and counted (reportFailures), and visited again at the next tick; the
 * rest of its batch goes on. A tick in which every store failed fails whole (retried as a job).
 */
export async function sealTick(deps: SealDeps, shard = 0, dueAt?: number): Promise<SealTickResult> {
  const now = (deps.now ?? Date.now)();
  const result = noTick();
  const minAgeMs = Math.floor(deps.bucketMs / 2);
  const leaseMs = deps.flushLeaseMs ?? FLUSH_LEASE_TICKS * deps.bucketMs;
  const warnings = deps.warnings ?? throttleLog(deps.log);
  // Shards past QUEUE_SHARDS (it was lowered) first: the stores they move into this shard are due now.
  if (deps.leftovers) {
    try {
      result.moved += await deps.leftovers.drain(deps, now);
    } catch (err) {
      warnings.log('warn', 'seal:leftover', { shard, err }, 'work-set shards past QUEUE_SHARDS not drained (tried again at the next tick)');
    }
  }
  // A due store of another shard (registered here under another QUEUE_SHARDS) is moved into its own, which visits
  // it: each store is visited and published by one shard, the one its applies register it in.
  const active: Array<{ store: string; mark: string }> = [];
  const strangers: Array<{ store: string; mark: string }> = [];
  for (const d of await deps.buckets.dueStores(shard, now)) (deps.buckets.shardOf(d.store) === shard ? active : strangers).push(d);
  if (strangers.length > 0) {
    try {
      const r = await deps.buckets.moveStores(shard, strangers, now, { hold: deps.hold });
      result.moved += r.moved;
      if (r.errors.length > 0) throw r.errors[0];
    } catch (err) {
      // Their visit time stays: they are due, and moved, at the next tick.
      warnings.log(
        'warn',
        'seal:move',
        { shard, stores: strangers.length, err },
        'stores of another work-set shard not moved (tried again at the next tick)',
      );
    }
  }
  result.stores = active.length;
  const folded = (f: { buckets: number; rows: number }) => {
    result.folded += f.buckets;
    result.rows += f.rows;
    deps.metrics.bucketsFolded.inc(f.buckets);
    deps.metrics.rowsFolded.inc(f.rows);
  };
  const failures: StoreFailure[] = [];
  const work = async (batch: ReadonlyArray<{ store: string; mark: string }>) => {
    // Stores set aside: their VISIT, FOLD or publish failed. The rest of the batch goes on without them.
    const failed = new Set<number>();
    const fail = (i: number, stage: SealStage, err: unknown) => {
      failed.add(i);
      failures.push({ store: batch[i]!.store, stage, err: err instanceof Error ? err : new Error(String(err)) });
    };
    // One round trip per Redis node for the batch's visits (VISIT seals, and reports the backlog and the due rows),
    // and one more for the folds of the buckets they sealed (FOLD finishes each and reports the same).
    const visits = await deps.buckets.visitEach(
      batch.map((b) => b.store),
      { now, minAgeMs, leaseMs },
    );
    const left = new Array<{ backlog: StoreBacklog; due: DueRow[]; sealedHead: number | undefined; nextDue: number | undefined }>(
      batch.length,
    );
    const fresh: number[] = [];
    const freshItems: Array<{ store: string; seq: number; pks: readonly string[] }> = [];
    const older: number[] = [];
    const epochs = new Array<string | undefined>(batch.length);
    visits.forEach((v, i) => {
      if (v instanceof Error) return fail(i, 'visit', v);
      left[i] = { backlog: v.backlog, due: v.dueRows, sealedHead: v.sealedHead, nextDue: v.nextDue };
      if (v.sealed !== undefined) {
        epochs[i] = v.epoch;
        result.sealed++;
        deps.metrics.bucketsSealed.inc();
        if (dueAt !== undefined) deps.metrics.sealLag.set(Math.max(0, now - dueAt) / 1000);
      }
      if (v.sealedHead === undefined) return;
      if (v.sealedRows && v.sealed === v.sealedHead) {
        fresh.push(i);
        freshItems.push({ store: batch[i]!.store, seq: v.sealed, pks: v.sealedRows });
      } else older.push(i);
    });
    if (fresh.length > 0) {
      const started = performance.now();
      const reports = await deps.buckets.foldVisitedEach(freshItems, now, leaseMs);
      const seconds = (performance.now() - started) / 1000; // each store's fold took the batch's round trip
      reports.forEach((r, k) => {
        // A bucket sealed but not folded stays at the head of the store's sealed list: its next visit folds it.
        if (r instanceof Error) fail(fresh[k]!, 'fold', r);
        else if (!r) older.push(fresh[k]!);
        else {
          left[fresh[k]!] = r;
          folded({ buckets: 1, rows: r.rows });
          deps.metrics.foldSeconds.observe(seconds);
        }
      });
    }
    // Older sealed buckets, or a big one: the general fold, then a fresh read of what is left, as a visit that seals
    // nothing (its due rows leased).
    await Promise.all(
      older.map(async (i) => {
        const store = batch[i]!.store;
        const started = performance.now();
        try {
          folded(await deps.buckets.foldSealed(store, { now }));
          const v = await deps.buckets.visit(store, { now, minAgeMs: Number.MAX_SAFE_INTEGER, leaseMs });
          left[i] = { backlog: v.backlog, due: v.dueRows, sealedHead: v.sealedHead, nextDue: v.nextDue };
        } catch (err) {
          fail(i, 'fold', err);
          return;
        }
        deps.metrics.foldSeconds.observe((performance.now() - started) / 1000);
      }),
    );
    // Every row a visit or fold leased is in `left` (their scripts lease only in the call whose report is kept).
    const flushes = batch.flatMap(({ store }, i) =>
      failed.has(i)
        ? []
        : left[i]!.due.map((r) => ({ data: { store, pk: r.pk }, opts: { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) } })),
    );
    // The batch's backlogs for the gauges, its retirements and the seqs its seals set (announced to the other
    // instances: followEpochs), in one call, before the flush jobs exist: a writer's publish after one of them is
    // written (a visit at the next tick) then comes after this one and stands (the earlier visit time wins). A store
    // is retired only with no dirty row left: nothing its flush jobs would write. A store the publish refuses on its
    // own account is set aside (its flush jobs are still enqueued: its rows are leased); a refusal of the whole shard
    // throws after the enqueue.
    const kept = batch.flatMap((_, i) => (failed.has(i) ? [] : [i]));
    const published = kept.map((i) => {
      const l = left[i]!;
      const visitAt = nextVisit(now, minAgeMs, { ...l, oldestUnfolded: l.backlog.oldestUnfolded });
      return { store: batch[i]!.store, backlog: l.backlog, mark: batch[i]!.mark, visitAt, epoch: epochs[i] };
    });
    try {
      (await deps.buckets.publishBacklogsEach(shard, published)).forEach((r, k) => {
        if (r instanceof Error) fail(kept[k]!, 'publish', r);
        else if (r === 'retired') result.retired++;
      });
    } finally {
      // A failed enqueue (or a crash before it) leaves its rows leased without a job: enqueued when the lease ends.
      if (flushes.length > 0) {
        await enqueueBulk(deps.queues, QUEUE.dynamoWrites, flushes);
        result.flushes += flushes.length;
        deps.metrics.flushesScheduled.inc(flushes.length);
      }
    }
  };
  const size = deps.batchStores ?? 500;
  const batches = Array.from({ length: Math.ceil(active.length / size) }, (_, i) => active.slice(i * size, (i + 1) * size));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(deps.concurrency ?? 4, batches.length) }, async () => {
      while (next < batches.length) await work(batches[next++]!);
    }),
  );
  if (failures.length > 0) {
    result.failed = failures.length;
    reportFailures({ ...deps, warnings }, shard, failures);
    // Nothing went through (Redis down, or refusing every write): the tick fails, and is retried, as a whole.
    if (failures.length === active.length) throw failures[0]!.err;
    // The stores set aside are visited again at the next tick, behind the stores that have waited longer than them
    // (their visit time would otherwise stay the oldest: first in every tick's first batch).
    await deps.buckets.deferVisits(
      shard,
      failures.map((f) => f.store),
      now,
    );
  }
  if (result.sealed || result.flushes || result.moved) deps.log.debug({ shard, ...result }, 'sealer tick');
  return result;
}

type SealStage = 'visit' | 'fold' | 'publish';

interface StoreFailure {
  store: string;
  stage: SealStage;
  err: Error;
}

/** The kind of a store's error, for the log's throttle: its code (WRONGTYPE, OOM, TALLY_ERR_...), else its first word. */
function errorKind(err: Error): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  return /\b(WRONGTYPE|OOM|NOSCRIPT|TALLY_ERR_[A-Z_]+)\b/.exec(err.message)?.[1] ?? /^[A-Z]+\b/.exec(err.message)?.[0] ?? 'other';
}

/**
 * Counts the stores a tick set aside (tally_seal_store_failures_total, by stage: no store label) and logs them, one
 * line per stage and kind of error (its code: WRONGTYPE, OOM, TALLY_ERR_...) and minute, naming the first stores and
 * the error: a corrupt store gives a line a minute, a Redis node refusing the writes of thousands of stores too.
 */
function reportFailures(deps: SealDeps, shard: number, failures: readonly StoreFailure[]): void {
  const throttled = deps.warnings ?? throttleLog(deps.log);
  // Grouped by stage and kind of error, whatever the stores: thousands of stores refused alike make one line.
  const groups = new Map<string, StoreFailure[]>();
  for (const f of failures) {
    deps.metrics.sealStoreFailures.inc({ stage: f.stage });
    const key = `seal:${f.stage}:${errorKind(f.err)}`;
    const g = groups.get(key);
    if (g) g.push(f);
    else groups.set(key, [f]);
  }
  for (const [key, g] of groups) {
    throttled.log(
      'warn',
      key,
      { shard, stage: g[0]!.stage, store: g[0]!.store, stores: g.length, examples: g.slice(0, 10).map((f) => f.store), err: g[0]!.err },
      `sealer tick set ${g.length} store(s) aside: their ${g[0]!.stage} failed (visited again at the next tick)`,
    );
  }
}

export const sealProcessor = (sealer: SealDeps) => {
  const deps = {
    ...sealer,
    warnings: sealer.warnings ?? throttleLog(sealer.log, { windowMs: 60_000 }),
    leftovers: sealer.leftovers ?? new LeftoverShards(),
  };
  return async (job: Job) => {
    const parsed = sealJobSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`invalid seal job: ${JSON.stringify(job.data)}`);
    // A tick of a shard past this process's QUEUE_SHARDS: a newer process (QUEUE_SHARDS raised, a rolling deploy) made
    // its scheduler. Skipped, not failed (a dead letter for 14 days): the next tick is most likely a newer process's.
    if (parsed.data.shard >= deps.buckets.shards) {
      deps.warnings.log(
        'info',
        'seal:shard',
        { shard: parsed.data.shard, shards: deps.buckets.shards },
        'seal tick of a shard past QUEUE_SHARDS skipped',
      );
      return { ...noTick(), skipped: true as const };
    }
    const started = performance.now();
    // The time the job scheduler planned this tick for (added at `timestamp`, `delay` before it was due).
    const r = await sealTick(deps, parsed.data.shard, job.timestamp + (job.opts.delay ?? 0));
    deps.metrics.sealTickSeconds.observe((performance.now() - started) / 1000);
    return r;
  };
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
