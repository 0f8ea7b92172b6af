import { randomUUID } from 'node:crypto';
import { batchAcceptedAt, QUEUE, QUEUE_NAMES, type QueueName } from '@tally/queues';
import { ErrorCode, Job, Queue } from 'bullmq';

// Dead-letter operations: the failed set of a queue is its dead-letter queue (docs/DESIGN.md invariant 3). Replay is
// `job.retry('failed')`, one atomic step that keeps the job's id, payload and options and refuses a job no longer
// failed; README "Dead letters" says why, and why replays are idempotent.

/** A refused dead-letter operation or bad input; `message` is one line saying what and why. */
export class DlqError extends Error {
  override name = 'DlqError';
}

export type FailedJob = ReturnType<typeof toFailedJob>;

/** The failed jobs a bulk command applies to: its reason matches, it failed at least / at most this long ago. */
type JobFilter = { reason?: RegExp; olderThanMs?: number; newerThanMs?: number };

interface ReplayOptions {
  now?: number;
  dryRun?: boolean;
  /** The aggregator's DEDUPE_WINDOW_SECONDS in ms: events batches accepted longer ago are not replayed… */
  dedupeWindowMs: number;
  /** …unless this is set (the operator knows they were never applied). */
  pastDedupeWindow?: boolean;
  /** The QUEUE_SHARDS the queues were made with: a dynamo-writes job of a shard past it is discarded (replayDiscard). */
  queueShards?: number;
}

interface BulkOptions extends Pick<ReplayOptions, 'now' | 'dryRun'> {
  /** Called after each job, skipped and failed ones too. */
  onProgress?: (done: number, total: number) => void;
  /** Jobs read per round trip while scanning the failed set. */
  pageSize?: number;
}

interface BulkResult {
  queue: QueueName;
  /** Oldest failure first, as the scan found them. */
  matched: FailedJob[];
  /** Replayed or purged (in a dry run: would be). */
  done: string[];
  /** Discarded instead of replayed (replayDiscard; in a dry run: would be), with why. */
  discarded: Array<{ id: string; why: string }>;
  skipped: Array<{ id: string; why: string }>;
  /** The job where an error other than a refusal (Redis unreachable, …) stopped the run; running it again goes on. */
  stopped?: { id: string; why: string; notTried: number };
}

/** A queue, or every shard of one: each function below reads and acts on all of them. */
type QueueShards = Queue | readonly Queue[];

/** The shards, their queue's name, and the shard number of shard `i` (none for a single one; `{t:events:3}`: 3). */
function shardsOf(queue: QueueShards) {
  const shards = queue instanceof Queue ? [queue] : queue;
  return {
    shards,
    name: assertQueueName(shards[0]!.name),
    shardOf: (i: number) => (shards.length > 1 ? Number(/:(\d+)\}$/.exec(shards[i]!.opts?.prefix ?? '')?.[1] ?? i) : undefined),
  };
}

export function assertQueueName(name: string): QueueName {
  if ((QUEUE_NAMES as readonly string[]).includes(name)) return name as QueueName;
  throw new DlqError(`unknown queue "${name}"; queues: ${QUEUE_NAMES.join(', ')}`);
}

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `90s`, `10m`, `2h`, `7d`, `1w`, `250ms`, or combined `1h30m`, to milliseconds. */
export function parseDuration(text: string): number {
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d|w))+$/.test(text)) throw new DlqError(`"${text}" is not a duration; use e.g. 30s, 10m, 2h, 7d or 1h30m`);
  return [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)].reduce((total, m) => total + Number(m[1]) * UNITS[m[2]!]!, 0);
}

/** `45s`, `12m`, `3h 5m`, `2d 4h`: two units at most. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const [m, h] = [Math.floor(s / 60), Math.floor(s / 3600)];
  if (s < 60) return `${s}s`;
  if (m < 60) return `${m}m`;
  if (h < 48) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  return h % 24 ? `${Math.floor(h / 24)}d ${h % 24}h` : `${h / 24}d`;
}

/** Builds a filter from CLI strings; throws DlqError naming the bad one. */
export function parseFilter(opts: { reason?: string; olderThan?: string; newerThan?: string }): JobFilter {
  const filter: JobFilter = {};
  try {
    if (opts.reason !== undefined) filter.reason = new RegExp(opts.reason, 'i');
  } catch (err) {
    throw new DlqError(`--reason: not a regular expression: ${(err as Error).message}`);
  }
  if (opts.olderThan !== undefined) filter.olderThanMs = parseDuration(opts.olderThan);
  if (opts.newerThan !== undefined) filter.newerThanMs = parseDuration(opts.newerThan);
  if ((filter.olderThanMs ?? 0) > (filter.newerThanMs ?? Infinity))
    throw new DlqError('--older-than is longer than --newer-than: no job can match both');
  return filter;
}

export function isEmptyFilter(filter: JobFilter): boolean {
  return filter.reason === undefined && filter.olderThanMs === undefined && filter.newerThanMs === undefined;
}

export function matches(job: FailedJob, filter: JobFilter, now: number): boolean {
  const age = now - job.failedAt;
  return age >= (filter.olderThanMs ?? -Infinity) && age <= (filter.newerThanMs ?? Infinity) && (filter.reason?.test(job.reason) ?? true);
}

function toFailedJob(queue: QueueName, job: Job, shard?: number) {
  return {
    queue,
    ...(shard === undefined ? {} : { shard }),
    id: String(job.id),
    name: job.name,
    // Epoch ms: when the job was added, and when it failed for the last time.
    enqueuedAt: job.timestamp,
    failedAt: job.finishedOn ?? job.processedOn ?? job.timestamp,
    attemptsMade: job.attemptsMade,
    reason: job.failedReason ?? '',
    // events jobs: when the batch was first accepted, the earlier of the job's creation and the payload's `receivedAt`.
    // The batch-id dedupe of the aggregator protects a replay only within the window from here.
    ...(queue === QUEUE.events && { acceptedAt: batchAcceptedAt(job.timestamp, job.data) }),
  };
}

/**
 * The failed jobs of every shard that match, with the shard holding each: the ids of the whole failed set first, in
 * one read (oldest failure first), then the jobs in pages by id, so jobs that leave the set meanwhile (another
 * operator, retention) shift nothing and none is passed over; one gone by its turn is left out.
 */
async function scanMatching(queue: QueueShards, filter: JobFilter, now: number, pageSize = 200) {
  const { shards, name, shardOf } = shardsOf(queue);
  const found: Array<{ info: FailedJob; queue: Queue }> = [];
  for (const [i, q] of shards.entries()) {
    const ids = [...new Set(await q.getRanges(['failed'], 0, -1, true))];
    for (let start = 0; start < ids.length; start += pageSize) {
      const page = await Promise.all(ids.slice(start, start + pageSize).map((id) => Job.fromId(q, id)));
      for (const job of page) {
        if (!job) continue;
        const info = toFailedJob(name, job, shardOf(i));
        if (matches(info, filter, now)) found.push({ info, queue: q });
      }
    }
  }
  return found;
}

/** The failed jobs that match, newest failure first, at most `limit`; `matched` counts all that match. */
export async function listFailed(queue: QueueShards, filter: JobFilter, opts: { limit: number; now?: number }) {
  const { shards, name, shardOf } = shardsOf(queue);
  const total = (await Promise.all(shards.map((q) => q.getFailedCount()))).reduce((a, b) => a + b, 0);
  let jobs: FailedJob[] = [];
  if (isEmptyFilter(filter)) {
    // Newest first is BullMQ's own order: read only the page shown, of each shard.
    for (const [i, q] of shards.entries()) {
      const page = opts.limit > 0 ? await q.getJobs(['failed'], 0, opts.limit - 1, false) : [];
      jobs.push(...page.filter((j): j is Job => Boolean(j)).map((j) => toFailedJob(name, j, shardOf(i))));
    }
  } else jobs = (await scanMatching(shards, filter, opts.now ?? Date.now())).map((f) => f.info);
  const matched = isEmptyFilter(filter) ? total : jobs.length;
  return { jobs: jobs.sort((a, b) => b.failedAt - a.failedAt).slice(0, opts.limit), matched, total };
}

/** The job with this id in whichever shard holds it; throws DlqError when there is none, or (given `verb`) it is not failed. */
async function findJob(queue: QueueShards, id: string, verb?: 'replayed' | 'purged') {
  const { shards, name, shardOf } = shardsOf(queue);
  for (const [i, q] of shards.entries()) {
    const job = await Job.fromId(q, id);
    if (!job) continue;
    const state = await job.getState();
    if (verb && state !== 'failed')
      throw new DlqError(`job "${id}" in queue ${name} is ${state}, not failed; only failed jobs are ${verb}`);
    return { job, state, queue: q, info: toFailedJob(name, job, shardOf(i)) };
  }
  throw new DlqError(`no job "${id}" in queue ${name}`);
}

/** Every job's details, in whatever state it is; throws DlqError when the id does not exist. */
export async function showJob(queue: QueueShards, id: string) {
  const { job, state, info } = await findJob(queue, id);
  return { ...info, state, data: job.data, opts: job.opts, stacktrace: job.stacktrace ?? [] };
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

/**
 * Why replaying this failed job would be a job no worker runs, so that it is discarded instead, or undefined: a flush
 * (dynamo-writes) of a shard past QUEUE_SHARDS is run by no worker, and the aggregators remove such jobs as redundant
 * (libs/queues LeftoverQueueShards): its row comes due again and is flushed from its own shard.
 */
function replayDiscard(job: FailedJob, queueShards: number | undefined): string | undefined {
  if (job.queue !== QUEUE.dynamoWrites || queueShards === undefined || job.shard === undefined || job.shard < queueShards) return undefined;
  return `shard ${job.shard} is past QUEUE_SHARDS (${queueShards}): no worker runs it, its row is flushed from its own shard`;
}

/**
 * Moves one failed job back to waiting with its id, or deletes it when replayDiscard says why (`discarded`). Throws
 * DlqError when it is missing, not failed, or unsafe.
 */
export async function replayJob(queue: QueueShards, id: string, opts: ReplayOptions): Promise<FailedJob & { discarded?: string }> {
  const { job, queue: q, info } = await findJob(queue, id, 'replayed');
  const outcome = await replayOne(q, job, info, opts);
  if (outcome?.skipped) throw new DlqError(`job "${id}": ${outcome.skipped}`);
  return { ...info, ...(outcome?.discarded && { discarded: outcome.discarded }) };
}

/** Deletes one failed job; throws DlqError when it is missing or not failed. */
export async function purgeJob(queue: QueueShards, id: string, opts: { dryRun?: boolean } = {}): Promise<FailedJob> {
  const { job, queue: q, info } = await findJob(queue, id, 'purged');
  if (!opts.dryRun) await purgeOne(q, job, info);
  return info;
}

/** Replays every failed job that matches, oldest failure first. */
export async function replayFailed(queue: QueueShards, filter: JobFilter, opts: BulkOptions & ReplayOptions): Promise<BulkResult> {
  const now = opts.now ?? Date.now();
  return bulk(queue, filter, { ...opts, now }, (job, info, q) => replayOne(q, job, info, { ...opts, now }));
}

/** Deletes every failed job that matches, for good. */
export async function purgeFailed(queue: QueueShards, filter: JobFilter, opts: BulkOptions): Promise<BulkResult> {
  return bulk(queue, filter, opts, async (job, info, q) => {
    if (!opts.dryRun) await purgeOne(q, job, info);
    return undefined;
  });
}

/** What became of a job a replay or purge did not simply do: skipped (why), or discarded instead of replayed (why). */
type Outcome = { skipped?: string; discarded?: string } | undefined;

// dlqClaimFailed takes job ARGV[1] out of the failed set KEYS[1] if it is there with the failure of ARGV[2] (its
// finishedOn, its score there), and marks its hash KEYS[2] with the claim's token ARGV[3]: the same claim sent again
// (ioredis resends a command whose answer a lost connection took) is answered 1 again, not taken for someone else's.
// It deletes a replay's mark: that replay's retry, refused now, is not its own sent again. dlqUnclaimFailed puts the
// job back if its hash still exists. dlqMarkReplay marks the hash with a replay's mark, `<ARGV[2]>:<ARGV[3]>`, if the
// job is in the failed set with that failure, for the same reason (replayOne); a second replay of the failure turns
// the mark into `<ARGV[2]>:`, no replay's: of two, the one whose retry BullMQ refuses is refused.
const SCRIPTS = {
  dlqClaimFailed: `if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], 'dlqReplay') redis.call('HSET', KEYS[2], 'dlqClaim', ARGV[3])
  return 1 end
if redis.call('HGET', KEYS[2], 'dlqClaim') == ARGV[3] then return 1 end return 0`,
  dlqUnclaimFailed: `if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HDEL', KEYS[2], 'dlqClaim') return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end return 0`,
  dlqMarkReplay: `if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) ~= tonumber(ARGV[2]) then return 0 end
local failure, mark, was = ARGV[2] .. ':', ARGV[2] .. ':' .. ARGV[3], redis.call('HGET', KEYS[2], 'dlqReplay')
if was ~= mark then
  if was and string.sub(was, 1, #failure) == failure then mark = failure end
  redis.call('HSET', KEYS[2], 'dlqReplay', mark)
end return 1`,
};

/** The clients the scripts are defined on. */
const defined = new WeakSet<object>();

/** The Redis client of `q` with the scripts defined, and their arguments for the job of `info` with a new token. */
async function scriptsFor(q: Queue, info: FailedJob) {
  const client = await q.getBackend().client;
  if (!defined.has(client)) for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { numberOfKeys: 2, lua });
  defined.add(client);
  const token = randomUUID();
  return { client, token, args: [q.toKey('failed'), q.toKey(info.id), info.id, info.failedAt, token] };
}

const goneMeanwhile = (info: FailedJob) =>
  new DlqError(`job "${info.id}" in queue ${info.queue} is no longer failed: it was replayed or removed meanwhile`);

/**
 * Deletes a failed job once it has claimed it: taken out of the failed set if it still holds the failure `info` shows.
 * A replay takes a job only from that set (BullMQ's reprocessJob), and the claim deletes its mark, so of a purge and a
 * replay of one job, one is refused. A job whose removal fails (locked) is put back.
 */
async function purgeOne(q: Queue, job: Job, info: FailedJob): Promise<void> {
  const { client, args } = await scriptsFor(q, info);
  if (!(await client.runCommand('dlqClaimFailed', args))) throw goneMeanwhile(info);
  await refusing(job, info, async () => {
    try {
      await job.remove();
    } catch (err) {
      // The removal's own error is the one to tell (a put-back on a dropped connection fails too).
      await client.runCommand('dlqUnclaimFailed', args).catch(() => undefined);
      throw err;
    }
  });
}

/** Moves a failed job back to waiting unless that is unsafe (skipped) or no worker would run it (discarded). */
async function replayOne(q: Queue, job: Job, info: FailedJob, opts: ReplayOptions): Promise<Outcome> {
  const discarded = replayDiscard(info, opts.queueShards);
  if (discarded) {
    if (!opts.dryRun) await purgeOne(q, job, info);
    return { discarded };
  }
  const hazard = replayHazard(info, opts.now ?? Date.now(), opts);
  if (hazard) return { skipped: hazard };
  if (opts.dryRun) return undefined;
  // Marked with this replay's token while it is failed: a retry refused as no longer failed of a job that still holds
  // the mark was this one's, run twice (ioredis sends a command again when a lost connection took its answer).
  const { client, token, args } = await scriptsFor(q, info);
  if (!(await client.runCommand('dlqMarkReplay', args))) throw goneMeanwhile(info);
  await refusing(job, info, async () => {
    // The aggregator refuses an events batch accepted longer ago than its dedupe window; the operator's
    // --past-dedupe-window goes with the batch (its `pastDedupeWindow`) so that it is applied.
    if (opts.pastDedupeWindow && info.queue === QUEUE.events) await job.updateData({ ...(job.data as object), pastDedupeWindow: true });
    try {
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    } catch (err) {
      const ours =
        (err as { code?: unknown }).code === ErrorCode.JobNotInState &&
        (await client.hget(q.toKey(info.id), 'dlqReplay')) === `${info.failedAt}:${token}`;
      if (!ours) throw err;
    }
  });
}

/**
 * Runs `act` on the job; BullMQ's refusal of a job that left the failed set meanwhile (replayed by someone else,
 * removed by retention, picked up by a worker) is thrown as a DlqError naming the job. Any other error (Redis
 * unreachable, a dropped connection, OOM…) is thrown as it is: that is no refusal, and "no longer failed" would hide it.
 */
async function refusing(job: Job, info: FailedJob, act: () => Promise<unknown>): Promise<void> {
  try {
    await act();
  } catch (err) {
    const what = `job "${job.id}" in queue ${info.queue}`;
    const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
    if (code === ErrorCode.JobNotExist) throw new DlqError(`${what} no longer exists: ${String(message)}`);
    if (code === ErrorCode.JobNotInState) throw new DlqError(`${what} is no longer failed: ${String(message)}`);
    // Job.remove() of a job a worker holds the lock of.
    if (err instanceof Error && /could not be removed because it is locked/.test(err.message))
      throw new DlqError(`${what} is no longer failed: ${err.message}`);
    throw err;
  }
}

/** The job of a scanned `info` as it is now, or why it is no longer one to act on. */
async function refetch(q: Queue, info: FailedJob, filter: JobFilter, now: number) {
  const job = await Job.fromId(q, info.id);
  if (!job) return 'no longer exists';
  if ((await job.getState()) !== 'failed') return 'no longer failed';
  // Replayed and failed again since the scan, it may fail for another reason now.
  const current = toFailedJob(info.queue, job, info.shard);
  return matches(current, filter, now) ? { job, info: current } : 'no longer matches';
}

/**
 * Scans first (the work is a fixed list, not a moving set), then acts on each job. One gone, no longer failed or no
 * longer matching by its turn is skipped, not an error: someone else handled it. Any other error (Redis gone, …)
 * stops the run there, the result saying what was done before and where it stopped, with the error's message.
 */
async function bulk(
  queue: QueueShards,
  filter: JobFilter,
  opts: BulkOptions,
  act: (job: Job, info: FailedJob, queue: Queue) => Promise<Outcome>,
): Promise<BulkResult> {
  const now = opts.now ?? Date.now();
  const found = (await scanMatching(queue, filter, now, opts.pageSize)).sort((a, b) => a.info.failedAt - b.info.failedAt);
  const matched = found.map((f) => f.info);
  const result: BulkResult = { queue: shardsOf(queue).name, matched, done: [], discarded: [], skipped: [] };
  for (const [n, { info, queue: q }] of found.entries()) {
    try {
      const current = await refetch(q, info, filter, now);
      const outcome = typeof current === 'string' ? { skipped: current } : await act(current.job, current.info, q);
      if (outcome?.skipped) result.skipped.push({ id: info.id, why: outcome.skipped });
      else if (outcome?.discarded) result.discarded.push({ id: info.id, why: outcome.discarded });
      else result.done.push(info.id);
    } catch (err) {
      if (err instanceof DlqError) result.skipped.push({ id: info.id, why: err.message });
      else {
        result.stopped = { id: info.id, why: err instanceof Error ? err.message : String(err), notTried: found.length - n - 1 };
        break;
      }
    }
    opts.onProgress?.(n + 1, found.length);
  }
  return result;
}
