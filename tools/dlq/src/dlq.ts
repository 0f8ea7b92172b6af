import { QUEUE, QUEUE_NAMES, type QueueName } from '@tally/queues';
import { Job, Queue, type JobsOptions } from 'bullmq';
import { DlqError } from './errors';

/**
 * Dead-letter operations on Tally's queues. The failed set of a queue is its dead-letter queue (docs/DESIGN.md
 * invariant 3): a job lands there with its reason once its attempts are spent or it is unprocessable.
 *
 * Replay is `job.retry('failed')`: one Lua script moves the job from the failed set back to waiting, keeping its
 * id, payload and options (Twenty's DeadLetterRedriveService re-adds with the original id for the same reason).
 * Remove-then-add would lose the job if the tool died in between, and an add with an id that still exists is
 * silently ignored by BullMQ. retry() also refuses a job that is no longer failed, so two operators replaying at
 * once cannot run a job twice. Attempt counters are reset so the replayed job gets its full retry budget.
 *
 * Replays are idempotent in Tally: an events batch carries a batch id the aggregator applies at most once within
 * the dedupe window, and a flush job writes only outbox entries above the row's watermark.
 */

export interface FailedJob {
  queue: QueueName;
  /** The queue shard holding the job, when the queue has several (QUEUE_SHARDS > 1). */
  shard?: number;
  id: string;
  /** BullMQ job name. */
  name: string;
  /** When the job was added (epoch ms). */
  enqueuedAt: number;
  /** When it failed for the last time (epoch ms). */
  failedAt: number;
  attemptsMade: number;
  reason: string;
  /**
   * events jobs: when the batch was first accepted, the earlier of the job's creation and the payload's
   * `receivedAt`. The batch-id dedupe of the aggregator protects a replay only within the window from here.
   */
  acceptedAt?: number;
}

export interface JobDetails extends FailedJob {
  state: string;
  data: unknown;
  opts: JobsOptions;
  stacktrace: string[];
}

/** Which failed jobs a bulk command applies to. Ages count from the moment the job failed. */
export interface JobFilter {
  reason?: RegExp;
  /** Failed at least this long ago. */
  olderThanMs?: number;
  /** Failed at most this long ago. */
  newerThanMs?: number;
}

export interface ReplayOptions {
  /** Epoch ms; default Date.now(). */
  now?: number;
  /** Report what would happen, change nothing. */
  dryRun?: boolean;
  /** The aggregator's DEDUPE_WINDOW_SECONDS in ms: events batches accepted longer ago are not replayed. */
  dedupeWindowMs: number;
  /** Replay events batches past the dedupe window anyway (the operator knows they were never applied). */
  pastDedupeWindow?: boolean;
}

export interface BulkOptions {
  now?: number;
  dryRun?: boolean;
  /** Called after each job (done counts skipped and failed ones too). */
  onProgress?: (done: number, total: number) => void;
  /** Jobs read per round trip while scanning the failed set. Default 200. */
  pageSize?: number;
}

export type BulkReplayOptions = BulkOptions & Omit<ReplayOptions, 'now' | 'dryRun'>;

export interface BulkResult {
  queue: QueueName;
  dryRun: boolean;
  /** Failed jobs that matched the filter when the scan ran, oldest failure first. */
  matched: FailedJob[];
  /** Replayed or purged (or, in a dry run, that would be). */
  done: string[];
  /** Left alone, with why (no longer failed, past the dedupe window, …). */
  skipped: Array<{ id: string; why: string }>;
}

/**
 * A queue, or every shard of one queue (`queueShards()`, QUEUE_SHARDS > 1): each function below reads and acts on
 * all of them, so a failed job is found in whichever shard its store's jobs go to.
 */
export type QueueShards = Queue | readonly Queue[];

const shardsOf = (q: QueueShards): readonly Queue[] => (q instanceof Queue ? [q] : q);

/** The queue's name (shared by its shards). */
function nameOf(shards: readonly Queue[]): QueueName {
  if (shards.length === 0) throw new DlqError('TALLY_ERR_DLQ_UNKNOWN_QUEUE', 'no queue given');
  return assertQueueName(shards[0]!.name);
}

/** The job with this id in whichever shard holds it (the first one, should an id exist in several). */
async function findJob(shards: readonly Queue[], id: string): Promise<{ job: Job; shard: number } | undefined> {
  for (const [shard, queue] of shards.entries()) {
    const job = await Job.fromId(queue, id);
    if (job) return { job, shard };
  }
  return undefined;
}

export function assertQueueName(name: string): QueueName {
  if ((QUEUE_NAMES as readonly string[]).includes(name)) return name as QueueName;
  throw new DlqError('TALLY_ERR_DLQ_UNKNOWN_QUEUE', `unknown queue "${name}"; queues: ${QUEUE_NAMES.join(', ')}`);
}

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `90s`, `10m`, `2h`, `7d`, `1w`, `250ms`, or combined `1h30m`, to milliseconds. */
export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (text.length === 0 || matched !== text.length) {
    throw new DlqError('TALLY_ERR_DLQ_BAD_DURATION', `"${text}" is not a duration; use e.g. 30s, 10m, 2h, 7d or 1h30m`);
  }
  return total;
}

/** `45s`, `12m`, `3h 5m`, `2d 4h`: two units at most. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** Builds a filter from CLI strings; throws DlqError naming the bad one. */
export function parseFilter(opts: { reason?: string; olderThan?: string; newerThan?: string }): JobFilter {
  const filter: JobFilter = {};
  if (opts.reason !== undefined) {
    try {
      filter.reason = new RegExp(opts.reason, 'i');
    } catch (err) {
      throw new DlqError('TALLY_ERR_DLQ_BAD_FILTER', `--reason: not a regular expression: ${(err as Error).message}`);
    }
  }
  if (opts.olderThan !== undefined) filter.olderThanMs = parseDuration(opts.olderThan);
  if (opts.newerThan !== undefined) filter.newerThanMs = parseDuration(opts.newerThan);
  if (filter.olderThanMs !== undefined && filter.newerThanMs !== undefined && filter.olderThanMs > filter.newerThanMs) {
    throw new DlqError('TALLY_ERR_DLQ_BAD_FILTER', '--older-than is longer than --newer-than: no job can match both');
  }
  return filter;
}

export function isEmptyFilter(filter: JobFilter): boolean {
  return filter.reason === undefined && filter.olderThanMs === undefined && filter.newerThanMs === undefined;
}

export function matches(job: FailedJob, filter: JobFilter, now: number): boolean {
  const age = now - job.failedAt;
  if (filter.olderThanMs !== undefined && age < filter.olderThanMs) return false;
  if (filter.newerThanMs !== undefined && age > filter.newerThanMs) return false;
  if (filter.reason && !filter.reason.test(job.reason)) return false;
  return true;
}

export function toFailedJob(queue: QueueName, job: Job, shard?: number): FailedJob {
  const info: FailedJob = {
    queue,
    ...(shard === undefined ? {} : { shard }),
    id: String(job.id),
    name: job.name,
    enqueuedAt: job.timestamp,
    failedAt: job.finishedOn ?? job.processedOn ?? job.timestamp,
    attemptsMade: job.attemptsMade,
    reason: job.failedReason ?? '',
  };
  if (queue === QUEUE.events) {
    const receivedAt = (job.data as { receivedAt?: unknown } | undefined)?.receivedAt;
    info.acceptedAt = typeof receivedAt === 'number' && Number.isFinite(receivedAt) ? Math.min(job.timestamp, receivedAt) : job.timestamp;
  }
  return info;
}

/**
 * Failed jobs of a queue, read in pages, oldest failure first (new failures append at the end, so a scan is not
 * disturbed by them). Each id is yielded once even when the set shifts between pages.
 */
export async function* scanFailed(queue: Queue, pageSize = 200): AsyncGenerator<Job> {
  const seen = new Set<string>();
  for (let start = 0; ; start += pageSize) {
    const page = (await queue.getJobs(['failed'], start, start + pageSize - 1, true)).filter((j): j is Job => Boolean(j));
    for (const job of page) {
      const id = String(job.id);
      if (seen.has(id)) continue;
      seen.add(id);
      yield job;
    }
    if (page.length < pageSize) return;
  }
}

/** The failed jobs that match, newest failure first, at most `limit`; `matched` counts all that match. */
export async function listFailed(
  queue: QueueShards,
  filter: JobFilter,
  opts: { limit: number; now?: number; pageSize?: number },
): Promise<{ jobs: FailedJob[]; matched: number; total: number }> {
  const now = opts.now ?? Date.now();
  const shards = shardsOf(queue);
  const name = nameOf(shards);
  const shardOf = (i: number) => (shards.length > 1 ? i : undefined);
  let total = 0;
  for (const q of shards) total += await q.getFailedCount();
  const all: FailedJob[] = [];
  if (isEmptyFilter(filter)) {
    // Newest first is BullMQ's own order: read only the page shown, of each shard.
    for (const [i, q] of shards.entries()) {
      const page = opts.limit > 0 ? await q.getJobs(['failed'], 0, opts.limit - 1, false) : [];
      all.push(...page.filter((j): j is Job => Boolean(j)).map((j) => toFailedJob(name, j, shardOf(i))));
    }
    all.sort((a, b) => b.failedAt - a.failedAt);
    return { jobs: all.slice(0, opts.limit), matched: total, total };
  }
  for (const [i, q] of shards.entries()) {
    for await (const job of scanFailed(q, opts.pageSize)) {
      const info = toFailedJob(name, job, shardOf(i));
      if (matches(info, filter, now)) all.push(info);
    }
  }
  all.sort((a, b) => b.failedAt - a.failedAt);
  return { jobs: all.slice(0, opts.limit), matched: all.length, total };
}

/** Every job's details, in whatever state it is; throws DlqError when the id does not exist. */
export async function showJob(queue: QueueShards, id: string): Promise<JobDetails> {
  const shards = shardsOf(queue);
  const name = nameOf(shards);
  const found = await findJob(shards, id);
  if (!found) throw new DlqError('TALLY_ERR_DLQ_JOB_NOT_FOUND', `no job "${id}" in queue ${name}`);
  const { job } = found;
  return {
    ...toFailedJob(name, job, shards.length > 1 ? found.shard : undefined),
    state: await job.getState(),
    data: job.data,
    opts: job.opts,
    stacktrace: job.stacktrace ?? [],
  };
}

/** Why replaying this failed job could count events twice, or undefined when it is safe. */
export function replayHazard(
  job: FailedJob,
  now: number,
  opts: Pick<ReplayOptions, 'dedupeWindowMs' | 'pastDedupeWindow'>,
): string | undefined {
  if (job.queue !== QUEUE.events || opts.pastDedupeWindow || job.acceptedAt === undefined) return undefined;
  const age = now - job.acceptedAt;
  if (age < opts.dedupeWindowMs) return undefined;
  return (
    `batch accepted ${formatAge(age)} ago, past the dedupe window (${formatAge(opts.dedupeWindowMs)}): if it was applied before it ` +
    'failed, a replay would count it twice. Add --past-dedupe-window if its reason shows it was never applied'
  );
}

/** Moves one failed job back to waiting with its id. Throws DlqError when it is missing, not failed, or unsafe. */
export async function replayJob(queue: QueueShards, id: string, opts: ReplayOptions): Promise<{ job: FailedJob; dryRun: boolean }> {
  const shards = shardsOf(queue);
  const name = nameOf(shards);
  const now = opts.now ?? Date.now();
  const found = await findJob(shards, id);
  if (!found) throw new DlqError('TALLY_ERR_DLQ_JOB_NOT_FOUND', `no job "${id}" in queue ${name}`);
  const { job } = found;
  const state = await job.getState();
  if (state !== 'failed') {
    throw new DlqError('TALLY_ERR_DLQ_NOT_FAILED', `job "${id}" in queue ${name} is ${state}, not failed; only failed jobs are replayed`);
  }
  const info = toFailedJob(name, job, shards.length > 1 ? found.shard : undefined);
  const hazard = replayHazard(info, now, opts);
  if (hazard) throw new DlqError('TALLY_ERR_DLQ_PAST_DEDUPE_WINDOW', `job "${id}": ${hazard}`);
  if (!opts.dryRun) await retryFailed(job, name);
  return { job: info, dryRun: Boolean(opts.dryRun) };
}

/** Replays every failed job that matches, oldest failure first. */
export async function replayFailed(queue: QueueShards, filter: JobFilter, opts: BulkReplayOptions): Promise<BulkResult> {
  const now = opts.now ?? Date.now();
  return bulk(queue, filter, { ...opts, now }, async (job, info) => {
    const hazard = replayHazard(info, now, opts);
    if (hazard) return hazard;
    if (!opts.dryRun) await retryFailed(job, info.queue);
    return undefined;
  });
}

/** Deletes every failed job that matches, for good. */
export async function purgeFailed(queue: QueueShards, filter: JobFilter, opts: BulkOptions): Promise<BulkResult> {
  return bulk(queue, filter, opts, async (job) => {
    if (!opts.dryRun) await job.remove();
    return undefined;
  });
}

/** Deletes one failed job; throws DlqError when it is missing or not failed. */
export async function purgeJob(queue: QueueShards, id: string, opts: { dryRun?: boolean } = {}): Promise<FailedJob> {
  const shards = shardsOf(queue);
  const name = nameOf(shards);
  const found = await findJob(shards, id);
  if (!found) throw new DlqError('TALLY_ERR_DLQ_JOB_NOT_FOUND', `no job "${id}" in queue ${name}`);
  const { job } = found;
  const state = await job.getState();
  if (state !== 'failed')
    throw new DlqError('TALLY_ERR_DLQ_NOT_FAILED', `job "${id}" in queue ${name} is ${state}, not failed; only failed jobs are purged`);
  if (!opts.dryRun) await job.remove();
  return toFailedJob(name, job, shards.length > 1 ? found.shard : undefined);
}

async function retryFailed(job: Job, queue: QueueName): Promise<void> {
  try {
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
  } catch (err) {
    // BullMQ refuses when the job left the failed set meanwhile (replayed by someone else, removed by retention).
    throw new DlqError('TALLY_ERR_DLQ_NOT_FAILED', `job "${job.id}" in queue ${queue} is no longer failed: ${(err as Error).message}`);
  }
}

/**
 * Scans first (so the work is a fixed list, not a moving set), then acts on each job. A job that is gone or no
 * longer failed when its turn comes is skipped, not an error: someone else handled it.
 */
async function bulk(
  queue: QueueShards,
  filter: JobFilter,
  opts: BulkOptions,
  act: (job: Job, info: FailedJob) => Promise<string | undefined>,
): Promise<BulkResult> {
  const shards = shardsOf(queue);
  const name = nameOf(shards);
  const now = opts.now ?? Date.now();
  const matched: FailedJob[] = [];
  const holder = new Map<FailedJob, Queue>();
  for (const [i, q] of shards.entries()) {
    for await (const job of scanFailed(q, opts.pageSize)) {
      const info = toFailedJob(name, job, shards.length > 1 ? i : undefined);
      if (!matches(info, filter, now)) continue;
      matched.push(info);
      holder.set(info, q);
    }
  }
  matched.sort((a, b) => a.failedAt - b.failedAt);

  const result: BulkResult = { queue: name, dryRun: Boolean(opts.dryRun), matched, done: [], skipped: [] };
  let count = 0;
  for (const info of matched) {
    const job = await Job.fromId(holder.get(info)!, info.id);
    if (!job || (await job.getState()) !== 'failed') {
      result.skipped.push({ id: info.id, why: job ? 'no longer failed' : 'no longer exists' });
    } else {
      try {
        const why = await act(job, info);
        if (why) result.skipped.push({ id: info.id, why });
        else result.done.push(info.id);
      } catch (err) {
        if (!(err instanceof DlqError)) throw err;
        result.skipped.push({ id: info.id, why: err.message });
      }
    }
    opts.onProgress?.(++count, matched.length);
  }
  return result;
}
