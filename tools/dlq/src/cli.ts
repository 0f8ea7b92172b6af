import { leftoverShardQueues, QUEUE_NAMES, queueShards, type QueueName, type TallyQueues } from '@tally/queues';
import type { Queue } from 'bullmq';
import { alignColumns, oneLine, runCli, UsageError, type CliIo, type CliValues } from '@tally/stack';
import * as dlq from './dlq';
import { USAGE } from './usage';

/** A progress display for bulk work (cli-progress in run.ts); absent in tests and when stderr is no terminal. */
export type Progress = { update(done: number): void; stop(): void };

interface DlqCliDeps {
  queues: TallyQueues;
  /** The aggregators' DEDUPE_WINDOW_SECONDS, in ms. */
  dedupeWindowMs: number;
  now?: () => number;
  progress?: (label: string, total: number) => Progress | undefined;
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

// Each command takes only the options its synopsis in USAGE shows (`filters`: the three below), any other is refused:
// an option replay or purge ignored would make them act on more than asked (`purge … --limit 10` deleting every
// match). They take no --limit: list's is the newest N per queue, "the N oldest" would be other jobs than it showed.
const GROUPS = { filters: ['reason', 'older-than', 'newer-than'] };

/**
 * Runs one command; returns the exit code (0 done, 1 refused or failed, 2 usage). `deps` may be a function that
 * connects: it is called only once the command line has been checked whole (a usage error needs no Redis).
 */
export function runDlqCli(argv: readonly string[], deps: DlqCliDeps | (() => Promise<DlqCliDeps>), io: CliIo): Promise<number> {
  const open = typeof deps === 'function' ? deps : async () => deps;
  return runCli(argv, io, { tool: 'dlq', usage: USAGE, options: DLQ_OPTIONS, groups: GROUPS, notTaken }, async (command, args, values) => {
    const opened: Queue[] = []; // the queues of shards past QUEUE_SHARDS, closed after the command
    const connect = async () => {
      const d = await open();
      // Every shard of the queue: QUEUE_SHARDS' own, then those past it that hold jobs.
      const shardsOf = async (name: QueueName) => {
        const past = await leftoverShardQueues(d.queues, name);
        opened.push(...past);
        return [...queueShards(d.queues, name), ...past];
      };
      return { ...d, now: (d.now ?? Date.now)(), shardsOf };
    };
    try {
      return await runCommand(command, args, values, io, connect);
    } finally {
      await Promise.all(opened.map((q) => q.close()));
    }
  });
}

type Connect = () => Promise<Omit<DlqCliDeps, 'now'> & { now: number; shardsOf: (name: QueueName) => Promise<Queue[]> }>;

async function runCommand(command: string, args: string[], values: CliValues<typeof DLQ_OPTIONS>, io: CliIo, connect: Connect) {
  const filter = withUsage(dlq.parseFilter, { reason: values.reason, olderThan: values['older-than'], newerThan: values['newer-than'] });
  const dryRun = Boolean(values['dry-run']);

  if (command === 'list') {
    if (args.length > 0) throw new UsageError(`list takes no positional arguments; use --queue <q>`);
    if (values.limit !== undefined && !/^\d+$/.test(values.limit))
      throw new UsageError(`--limit must be a whole number; got ${JSON.stringify(values.limit)}`);
    const limit = values.limit === undefined ? 50 : Number(values.limit);
    const names = values.queue === undefined ? QUEUE_NAMES : [withUsage(dlq.assertQueueName, values.queue)];
    const { now, shardsOf } = await connect();
    const rows: dlq.FailedJob[] = [];
    const summary: string[] = [];
    for (const name of names) {
      const r = await dlq.listFailed(await shardsOf(name), filter, { limit, now });
      rows.push(...r.jobs);
      const failed = dlq.isEmptyFilter(filter) ? `${r.total} failed` : `${r.matched} of ${r.total} failed match`;
      summary.push(`${name}: ${failed}${r.jobs.length < r.matched ? `, ${r.jobs.length} shown` : ''}`);
    }
    const json = rows.map((j) => ({ ...j, ageSeconds: Math.round((now - j.failedAt) / 1000) }));
    const lines = values.json ? [JSON.stringify(json, null, 2)] : [...(rows.length > 0 ? table(rows, now) : []), summary.join('; ')];
    for (const line of lines) io.out(line);
    return 0;
  }

  if (command === 'show' && args.length !== 2) throw new UsageError('show takes <queue> <id>');
  if (args[0] === undefined) throw new UsageError(`${command} needs a queue (${QUEUE_NAMES.join(', ')})`);
  const queueName = withUsage(dlq.assertQueueName, args[0]);
  if (args[1] === '') throw new UsageError(`${command}: the job id is empty`);

  if (command === 'show') {
    const { now, shardsOf } = await connect();
    const job = await dlq.showJob(await shardsOf(queueName), args[1]!);
    if (values.json) {
      io.out(JSON.stringify(job, null, 2));
      return 0;
    }
    const at = (t: number) => `${new Date(t).toISOString()} (${dlq.formatAge(now - t)} ago)`;
    const fields: Array<[string, unknown]> = [
      ['queue', job.queue],
      ['id', job.id],
      ['shard', job.shard],
      ['name', job.name],
      ['state', job.state],
      ['enqueued', at(job.enqueuedAt)],
      ['failed', job.state === 'failed' ? at(job.failedAt) : undefined],
      ['attempts', `${job.attemptsMade}${job.opts.attempts ? ` of ${job.opts.attempts}` : ''}`],
      ['reason', job.reason || undefined],
    ];
    for (const [k, v] of fields) if (v !== undefined) io.out(`${`${k}:`.padEnd(11)}${String(v)}`);
    io.out('payload:');
    io.out(JSON.stringify(job.data, null, 2));
    if (job.stacktrace.length > 0) for (const line of ['stack trace of the last failure:', job.stacktrace.at(-1)!]) io.out(line);
    return 0;
  }

  // replay and purge: one job by id, or every failed job that matches --all or the filters.
  if (command === 'purge' && !dryRun && !values.yes)
    throw new UsageError('purge deletes failed jobs for good and never asks: add --yes (or --dry-run to see what it would delete)');
  const filtered = !dlq.isEmptyFilter(filter);
  if (args.length === 2 && (values.all || filtered)) throw new UsageError(`${command} <queue> <id> takes no --all or filters`);
  if (args.length !== 1 && args.length !== 2) throw new UsageError(`${command} takes <queue> <id>, or <queue> with --all or filters`);
  if (args.length === 1 && values.all && filtered) throw new UsageError(`${command}: use --all or filters, not both`);
  if (args.length === 1 && !values.all && !filtered)
    throw new UsageError(`${command} <queue> needs an id, --all, or a filter (--reason, --older-than, --newer-than)`);

  const deps = await connect();
  const { now } = deps;
  const queue = await deps.shardsOf(queueName);
  const replay = {
    dedupeWindowMs: deps.dedupeWindowMs,
    pastDedupeWindow: Boolean(values['past-dedupe-window']),
    queueShards: queueShards(deps.queues, queueName).length,
    now,
    dryRun,
  };
  const would = dryRun ? `dry run: would ${command}` : { replay: 'replayed', purge: 'purged' }[command];
  if (args.length === 2) {
    const job = await (command === 'purge' ? dlq.purgeJob(queue, args[1]!, { dryRun }) : dlq.replayJob(queue, args[1]!, replay));
    if ('discarded' in job && job.discarded) {
      io.out(`${dryRun ? 'dry run: would discard' : 'discarded'} job ${job.id} in ${job.queue} (${job.discarded})`);
      return 0;
    }
    const failed = command === 'replay' ? ` (failed ${dlq.formatAge(now - job.failedAt)} ago: ${oneLine(job.reason, 100)})` : '';
    io.out(`${would} job ${job.id} in ${job.queue}${failed}`);
    return 0;
  }
  let bar: Progress | undefined;
  const onProgress = (done: number, total: number) => {
    if (done === 1) bar = deps.progress?.(`${command} ${queue[0]!.name}`, total);
    bar?.update(done);
  };
  const bulk =
    command === 'purge'
      ? dlq.purgeFailed(queue, filter, { now, dryRun, onProgress })
      : dlq.replayFailed(queue, filter, { ...replay, onProgress });
  const result = await bulk.finally(() => bar?.stop());
  if (dryRun && result.matched.length > 0) for (const line of table(result.matched, now)) io.out(line);
  for (const d of result.discarded) io.out(`${dryRun ? 'would discard' : 'discarded'} ${d.id}: ${d.why}`);
  for (const s of result.skipped) io.out(`${dryRun ? 'would skip' : 'skipped'} ${s.id}: ${s.why}`);
  const { stopped, skipped, discarded } = result;
  const notes = [
    discarded.length && `${discarded.length} ${dryRun ? 'would be discarded' : 'discarded'}`,
    skipped.length && `${skipped.length} ${dryRun ? 'would be skipped' : 'skipped'}`,
    stopped && `stopped at job ${stopped.id}, ${stopped.notTried} not tried`,
  ];
  const noted = notes.some(Boolean) ? ` (${notes.filter(Boolean).join(', ')})` : '';
  io.out(`${would} ${result.done.length} of ${result.matched.length} matching failed jobs in ${result.queue}${noted}`);
  if (stopped) io.err(`tally: ${command} stopped at job ${stopped.id}: ${stopped.why} (the same command again goes on with the rest)`);
  return result.skipped.length > 0 || stopped ? 1 : 0;
}

/** What to use instead of an option a command does not take, after "<command> takes no --<option>". */
function notTaken(command: string, option: string): string {
  const instead: Record<string, string> = { queue: ': give the queue as the first argument', json: ': only list and show print JSON' };
  if (option === 'limit' && command !== 'show')
    return `: ${command} acts on every failed job that matches; narrow the match with --reason, --older-than or --newer-than (see it first with --dry-run), or give one job id`;
  return instead[option] ?? '';
}

/** `fn(arg)`, its DlqError (bad input) as a UsageError. */
function withUsage<A, T>(fn: (arg: A) => T, arg: A): T {
  try {
    return fn(arg);
  } catch (err) {
    throw err instanceof dlq.DlqError ? new UsageError(err.message) : err;
  }
}

export function table(jobs: readonly dlq.FailedJob[], now: number): string[] {
  const rows = jobs.map((j) => [j.queue, j.id, dlq.formatAge(now - j.failedAt), String(j.attemptsMade), oneLine(j.reason, 100)]);
  return alignColumns([['QUEUE', 'ID', 'AGE', 'ATTEMPTS', 'REASON'], ...rows]);
}
