import { QUEUE_NAMES, queueShards, type QueueName, type TallyQueues } from '@tally/queues';
import type { Queue } from 'bullmq';
import {
  assertQueueName,
  formatAge,
  isEmptyFilter,
  listFailed,
  parseFilter,
  purgeFailed,
  purgeJob,
  replayFailed,
  replayJob,
  showJob,
  type BulkResult,
  type FailedJob,
  type JobFilter,
} from './dlq';
import { DlqError } from './errors';
import { alignColumns, runCli, UsageError, type CliIo, type CliValues } from '@tally/stack';
import { USAGE } from './usage';

export { USAGE };

/** A progress display for bulk work (cli-progress in main.ts); absent in tests and when stderr is no terminal. */
export interface Progress {
  update(done: number): void;
  stop(): void;
}

export interface DlqCliDeps {
  /** Tally's queues (createQueues): every shard of each queue is read and acted on; or one queue per name. */
  queues: TallyQueues | Readonly<Record<QueueName, Queue>>;
  /** The aggregator's batch-id dedupe window (DEDUPE_WINDOW_SECONDS), in ms. */
  dedupeWindowMs: number;
  now?: () => number;
  /** A progress display for bulk work, or undefined for none. */
  progress?: (label: string, total: number) => Progress | undefined;
}

/** Runs one command; returns the exit code (0 done, 1 refused or failed, 2 usage). Never prompts. */
export function runDlqCli(argv: readonly string[], deps: DlqCliDeps, io: CliIo): Promise<number> {
  return runCli(argv, io, USAGE, DLQ_OPTIONS, (command, args, values) => run(command, args, values, deps, io));
}

const DLQ_OPTIONS = {
  queue: { type: 'string' },
  reason: { type: 'string' },
  'older-than': { type: 'string' },
  'newer-than': { type: 'string' },
  limit: { type: 'string' },
  all: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  yes: { type: 'boolean' },
  json: { type: 'boolean' },
  'past-dedupe-window': { type: 'boolean' },
} as const;

async function run(command: string, args: string[], values: CliValues<typeof DLQ_OPTIONS>, deps: DlqCliDeps, io: CliIo): Promise<number> {
  const now = (deps.now ?? Date.now)();
  const filter = withUsage(() => parseFilter({ reason: values.reason, olderThan: values['older-than'], newerThan: values['newer-than'] }));
  const queueArg = (name: string | undefined): readonly Queue[] => {
    if (name === undefined) throw new UsageError(`${command} needs a queue (${QUEUE_NAMES.join(', ')})`);
    return queueShards(
      deps.queues,
      withUsage(() => assertQueueName(name)),
    );
  };

  switch (command) {
    case 'list': {
      if (args.length > 0) throw new UsageError(`list takes no positional arguments; use --queue <q>`);
      const limit = values.limit === undefined ? 50 : Number(values.limit);
      if (!Number.isInteger(limit) || limit < 0) throw new UsageError(`--limit must be a whole number; got "${values.limit}"`);
      const names = values.queue === undefined ? QUEUE_NAMES : [withUsage(() => assertQueueName(values.queue!))];
      const rows: FailedJob[] = [];
      const summary: string[] = [];
      for (const name of names) {
        const r = await listFailed(queueShards(deps.queues, name), filter, { limit, now });
        rows.push(...r.jobs);
        const shown = r.jobs.length < r.matched ? `, ${r.jobs.length} shown` : '';
        summary.push(
          isEmptyFilter(filter) ? `${name}: ${r.total} failed${shown}` : `${name}: ${r.matched} of ${r.total} failed match${shown}`,
        );
      }
      if (values.json) {
        io.out(
          JSON.stringify(
            rows.map((j) => ({ ...j, ageSeconds: Math.round((now - j.failedAt) / 1000) })),
            null,
            2,
          ),
        );
        return 0;
      }
      if (rows.length > 0) for (const line of table(rows, now)) io.out(line);
      io.out(summary.join('; '));
      return 0;
    }

    case 'show': {
      if (args.length !== 2) throw new UsageError('show takes <queue> <id>');
      const job = await showJob(queueArg(args[0]), args[1]!);
      if (values.json) {
        io.out(JSON.stringify(job, null, 2));
        return 0;
      }
      io.out(`queue:     ${job.queue}`);
      io.out(`id:        ${job.id}`);
      if (job.shard !== undefined) io.out(`shard:     ${job.shard}`);
      io.out(`name:      ${job.name}`);
      io.out(`state:     ${job.state}`);
      io.out(`enqueued:  ${new Date(job.enqueuedAt).toISOString()} (${formatAge(now - job.enqueuedAt)} ago)`);
      if (job.state === 'failed') io.out(`failed:    ${new Date(job.failedAt).toISOString()} (${formatAge(now - job.failedAt)} ago)`);
      io.out(`attempts:  ${job.attemptsMade}${job.opts.attempts ? ` of ${job.opts.attempts}` : ''}`);
      if (job.reason) io.out(`reason:    ${job.reason}`);
      io.out('payload:');
      io.out(JSON.stringify(job.data, null, 2));
      if (job.stacktrace.length > 0) {
        io.out('stack trace of the last failure:');
        io.out(job.stacktrace[job.stacktrace.length - 1]!);
      }
      return 0;
    }

    case 'replay': {
      const queue = queueArg(args[0]);
      const dryRun = Boolean(values['dry-run']);
      const replay = { dedupeWindowMs: deps.dedupeWindowMs, pastDedupeWindow: Boolean(values['past-dedupe-window']) };
      if (args.length === 2) {
        if (values.all || !isEmptyFilter(filter)) throw new UsageError('replay <queue> <id> takes no --all or filters');
        const { job } = await replayJob(queue, args[1]!, { ...replay, now, dryRun });
        io.out(
          `${dryRun ? 'dry run: would replay' : 'replayed'} job ${job.id} in ${job.queue} (failed ${formatAge(now - job.failedAt)} ago: ${oneLine(job.reason, 100)})`,
        );
        return 0;
      }
      if (args.length !== 1) throw new UsageError('replay takes <queue> <id>, or <queue> with --all or filters');
      needSelection('replay', values.all, filter);
      const result = await withProgress(deps, `replay ${queue[0]!.name}`, (onProgress) =>
        replayFailed(queue, filter, { ...replay, now, dryRun, onProgress }),
      );
      return report(result, 'replay', now, io);
    }

    case 'purge': {
      const queue = queueArg(args[0]);
      const dryRun = Boolean(values['dry-run']);
      if (!dryRun && !values.yes) {
        throw new UsageError('purge deletes failed jobs for good and never asks: add --yes (or --dry-run to see what it would delete)');
      }
      if (args.length === 2) {
        if (values.all || !isEmptyFilter(filter)) throw new UsageError('purge <queue> <id> takes no --all or filters');
        const job = await purgeJob(queue, args[1]!, { dryRun });
        io.out(`${dryRun ? 'dry run: would purge' : 'purged'} job ${job.id} in ${job.queue}`);
        return 0;
      }
      if (args.length !== 1) throw new UsageError('purge takes <queue> <id>, or <queue> with --all or filters');
      needSelection('purge', values.all, filter);
      const result = await withProgress(deps, `purge ${queue[0]!.name}`, (onProgress) =>
        purgeFailed(queue, filter, { now, dryRun, onProgress }),
      );
      return report(result, 'purge', now, io);
    }

    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function withUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof DlqError) throw new UsageError(err.message);
    throw err;
  }
}

/** A bulk command must say which jobs: --all, or at least one filter (never all jobs by accident). */
function needSelection(command: string, all: boolean | undefined, filter: JobFilter): void {
  if (all && !isEmptyFilter(filter)) throw new UsageError(`${command}: use --all or filters, not both`);
  if (!all && isEmptyFilter(filter))
    throw new UsageError(`${command} <queue> needs an id, --all, or a filter (--reason, --older-than, --newer-than)`);
}

async function withProgress(
  deps: DlqCliDeps,
  label: string,
  work: (onProgress: (done: number, total: number) => void) => Promise<BulkResult>,
): Promise<BulkResult> {
  let bar: Progress | undefined;
  let started = false;
  try {
    return await work((done, total) => {
      if (!started) {
        started = true;
        bar = deps.progress?.(label, total);
      }
      bar?.update(done);
    });
  } finally {
    bar?.stop();
  }
}

function report(result: BulkResult, verb: 'replay' | 'purge', now: number, io: CliIo): number {
  const past = verb === 'replay' ? 'replayed' : 'purged';
  if (result.dryRun && result.matched.length > 0) for (const line of table(result.matched, now)) io.out(line);
  for (const s of result.skipped) io.out(`skipped ${s.id}: ${s.why}`);
  const head = result.dryRun ? `dry run: would ${verb}` : past;
  io.out(
    `${head} ${result.done.length} of ${result.matched.length} matching failed jobs in ${result.queue}${result.skipped.length ? ` (${result.skipped.length} skipped)` : ''}`,
  );
  return result.skipped.length > 0 ? 1 : 0;
}

/** Aligned columns: QUEUE ID AGE ATTEMPTS REASON (reason on one line, cut at 100 characters). */
export function table(jobs: readonly FailedJob[], now: number): string[] {
  const rows = [
    ['QUEUE', 'ID', 'AGE', 'ATTEMPTS', 'REASON'],
    ...jobs.map((j) => [j.queue, j.id, formatAge(now - j.failedAt), String(j.attemptsMade), oneLine(j.reason, 100)]),
  ];
  return alignColumns(rows);
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
