import { closeQueues, createQueues, QUEUE, queueFor, queueShards, shardOfStore, type TallyQueues } from '@tally/queues';
import { ErrorCode, Job } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { runDlqCli } from './cli';
import { DlqError, listFailed, parseFilter, purgeFailed, purgeJob, replayFailed, replayJob, showJob } from './dlq';
import { batch, expectShardedDeadLetters, failJobs, io, useDlqRedis } from './test-fixtures';

let redis: Redis;
let redisUrl: string;
let queues: TallyQueues;
const DAY = 86_400_000;

useDlqRedis((r, url) => {
  [redis, redisUrl] = [r, url];
  queues = createQueues(redis);
  return () => closeQueues(queues);
});

describe('dead-letter operations on a real Redis', () => {
  it('lists failed jobs newest first with reason and attempts, filtered and limited', async () => {
    await failJobs(queues.events, [{ data: batch('b1'), opts: { jobId: 'j1' } }], () => 'first: tenant lookup timed out');
    await failJobs(
      queues.events,
      [
        { data: batch('b2'), opts: { jobId: 'j2' } },
        { data: batch('b3'), opts: { jobId: 'j3' } },
      ],
      (d) => (d.batchId === 'b2' ? 'second: Redis said OOM' : 'third: Redis said OOM'),
    );
    const all = await listFailed(queues.events, {}, { limit: 10 });
    expect(all.total).toBe(3);
    expect(all.jobs.map((j) => j.id).slice(-1)).toEqual(['j1']); // oldest failure last
    expect(all.jobs.find((j) => j.id === 'j2')).toMatchObject({ queue: 'events', attemptsMade: 1, reason: 'second: Redis said OOM' });

    const oom = await listFailed(queues.events, parseFilter({ reason: 'redis said oom' }), { limit: 10 });
    expect(oom.jobs.map((j) => j.id).sort()).toEqual(['j2', 'j3']);
    expect(oom.matched).toBe(2);
    expect((await listFailed(queues.events, parseFilter({ reason: 'oom' }), { limit: 1 })).jobs).toHaveLength(1);

    // Two hours later, everything failed more than an hour ago and nothing in the last 10 minutes.
    const later = Date.now() + 2 * 3_600_000;
    expect((await listFailed(queues.events, parseFilter({ olderThan: '1h' }), { limit: 10, now: later })).matched).toBe(3);
    expect((await listFailed(queues.events, parseFilter({ newerThan: '10m' }), { limit: 10, now: later })).matched).toBe(0);
  });

  it('shows a job with its payload; unknown ids are named', async () => {
    await failJobs(queues.events, [{ data: batch('b-show'), opts: { jobId: 'show-1' } }], () => 'boom');
    const job = await showJob(queues.events, 'show-1');
    expect(job).toMatchObject({ id: 'show-1', state: 'failed', reason: 'boom', attemptsMade: 1 });
    expect(job.data).toMatchObject({ batchId: 'b-show', store: 'S1' });
    expect(job.stacktrace.at(-1)).toMatch(/^Error: boom/);
    await expect(showJob(queues.events, 'nope')).rejects.toThrowError(/^no job "nope" in queue events$/);
  });

  it('replays one job with its original id and a fresh attempt budget; a second replay is refused', async () => {
    await failJobs(
      queues[QUEUE.dynamoWrites],
      [{ data: { store: 'S1', pk: 'S1' }, opts: { jobId: 'flush-1' } }],
      () => 'throttled too long',
    );
    const dry = await replayJob(queues[QUEUE.dynamoWrites], 'flush-1', { dedupeWindowMs: DAY, dryRun: true });
    expect(dry.id).toBe('flush-1');
    expect(await queues[QUEUE.dynamoWrites].getJobState('flush-1')).toBe('failed');

    await replayJob(queues[QUEUE.dynamoWrites], 'flush-1', { dedupeWindowMs: DAY });
    expect(await queues[QUEUE.dynamoWrites].getJobState('flush-1')).toBe('waiting');
    const job = (await queues[QUEUE.dynamoWrites].getJob('flush-1'))!;
    expect(job.data).toEqual({ store: 'S1', pk: 'S1' });
    expect(job.attemptsMade).toBe(0);
    expect(job.failedReason).toBeFalsy();
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);

    const again = replayJob(queues[QUEUE.dynamoWrites], 'flush-1', { dedupeWindowMs: DAY });
    await expect(again).rejects.toThrowError(DlqError);
    await expect(replayJob(queues[QUEUE.dynamoWrites], 'flush-1', { dedupeWindowMs: DAY })).rejects.toThrowError(
      /^job "flush-1" in queue dynamo-writes is waiting, not failed; only failed jobs are replayed$/,
    );
  });

  it('refuses to replay an events batch accepted before the dedupe window, unless told it is safe', async () => {
    const old = Date.now() - 30 * 3_600_000;
    await failJobs(
      queues.events,
      [{ data: batch('b-old', old), opts: { jobId: 'old-1', timestamp: old } }],
      () => 'invalid events payload: events.0.type: unknown',
    );
    await failJobs(queues.events, [{ data: batch('b-new'), opts: { jobId: 'new-1' } }], () => 'tenant lookup timed out');

    await expect(replayJob(queues.events, 'old-1', { dedupeWindowMs: DAY })).rejects.toThrowError(
      /^job "old-1": batch accepted 30h ago, past the dedupe window/,
    );
    expect(await queues.events.getJobState('old-1')).toBe('failed');

    // A dry run says what the replay would do, the refusal included: "would skip", not "skipped" (exit 1, as the replay).
    const dry = io();
    expect(await runDlqCli(['replay', 'events', '--all', '--dry-run'], { queues, dedupeWindowMs: DAY }, dry.io)).toBe(1);
    expect(dry.out.slice(-2)).toEqual([
      expect.stringMatching(/^would skip old-1: batch accepted 30h ago, past the dedupe window/),
      'dry run: would replay 1 of 2 matching failed jobs in events (1 would be skipped)',
    ]);
    expect(await queues.events.getFailedCount()).toBe(2);

    const bulk = await replayFailed(queues.events, {}, { dedupeWindowMs: DAY });
    expect(bulk.done).toEqual(['new-1']);
    expect(bulk.skipped).toEqual([{ id: 'old-1', why: expect.stringMatching(/past the dedupe window/) }]);

    await replayJob(queues.events, 'old-1', { dedupeWindowMs: DAY, pastDedupeWindow: true });
    expect(await queues.events.getJobState('old-1')).toBe('waiting');
    // The override goes with the batch, for the aggregator (which refuses a batch past its window otherwise).
    expect((await queues.events.getJob('old-1'))!.data).toMatchObject({ batchId: 'b-old', pastDedupeWindow: true });
    expect((await queues.events.getJob('new-1'))!.data).not.toHaveProperty('pastDedupeWindow');
  });

  it('replays and purges in bulk by filter, reporting progress; a dry run changes nothing', async () => {
    const ids = await failJobs(
      queues[QUEUE.dynamoWrites],
      Array.from({ length: 6 }, (_, i) => ({ data: { store: 'S1', pk: `S1#product#P${i}` }, opts: { jobId: `f${i}` } })),
      (d) => (d.pk.endsWith('0') || d.pk.endsWith('1') ? 'row S1: item too large' : 'DynamoDB throttled'),
    );
    expect(ids).toHaveLength(6);

    const progress: Array<[number, number]> = [];
    const dry = await replayFailed(queues[QUEUE.dynamoWrites], parseFilter({ reason: 'throttled' }), {
      dedupeWindowMs: DAY,
      dryRun: true,
      onProgress: (d, t) => progress.push([d, t]),
    });
    expect(dry.done.sort()).toEqual(['f2', 'f3', 'f4', 'f5']);
    expect(progress).toEqual([
      [1, 4],
      [2, 4],
      [3, 4],
      [4, 4],
    ]);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(6);

    const replayed = await replayFailed(queues[QUEUE.dynamoWrites], parseFilter({ reason: 'throttled' }), {
      dedupeWindowMs: DAY,
      pageSize: 2,
    });
    expect(replayed.done.sort()).toEqual(['f2', 'f3', 'f4', 'f5']);
    expect(await queues[QUEUE.dynamoWrites].getWaitingCount()).toBe(4);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(2);

    expect((await purgeFailed(queues[QUEUE.dynamoWrites], parseFilter({ reason: 'too large' }), { dryRun: true })).done).toHaveLength(2);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(2);
    const purged = await purgeFailed(queues[QUEUE.dynamoWrites], parseFilter({ reason: 'too large' }), {});
    expect(purged.done.sort()).toEqual(['f0', 'f1']);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
    expect(await queues[QUEUE.dynamoWrites].getJob('f0')).toBeUndefined();
    await expect(purgeJob(queues[QUEUE.dynamoWrites], 'f2')).rejects.toThrowError(/is waiting, not failed; only failed jobs are purged/);
  });
});

describe('a failed set that changes during a bulk scan', () => {
  it('passes over none of the jobs still failed when others leave the set between pages', async () => {
    await failJobs(
      queues[QUEUE.dynamoWrites],
      Array.from({ length: 6 }, (_, i) => ({ data: { store: 'S1', pk: `S1#product#P${i}` }, opts: { jobId: `m${i}` } })),
      () => 'DynamoDB throttled',
    );
    // Another operator purges the two oldest while this scan reads its first page (pages of 2).
    let purged: Promise<unknown> | undefined;
    const reason = /throttled/;
    const filter = {
      reason: {
        test: (text: string) => {
          purged ??= Promise.all(['m0', 'm1'].map(async (id) => (await queues[QUEUE.dynamoWrites].getJob(id))?.remove()));
          return reason.test(text);
        },
      } as RegExp,
    };
    const r = await replayFailed(queues[QUEUE.dynamoWrites], filter, { dedupeWindowMs: DAY, pageSize: 2 });
    await purged;
    expect(r.matched.map((j) => j.id).sort()).toEqual(expect.arrayContaining(['m2', 'm3', 'm4', 'm5']));
    expect(r.done.sort()).toEqual(['m2', 'm3', 'm4', 'm5']);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
  });
});

describe('a purge or replay racing with another operator', () => {
  afterEach(() => vi.restoreAllMocks());
  const { getState, remove, retry } = Job.prototype;
  /** Runs `other` once, right after the purge has seen job `id` failed (its getState). */
  function afterStateCheck(id: string, other: () => Promise<unknown>) {
    let done = false;
    vi.spyOn(Job.prototype, 'getState').mockImplementation(async function (this: Job) {
      const state = await getState.call(this);
      if (!done && this.id === id && state === 'failed') {
        done = true;
        await other();
      }
      return state;
    });
  }
  const replay = (id: string) => replayJob(queues.events, id, { dedupeWindowMs: DAY });
  const deadLetters = (ids: string[], reason: string) =>
    failJobs(
      queues.events,
      ids.map((id) => ({ data: batch(`b-${id}`), opts: { jobId: id } })),
      () => reason,
    );

  it('a purge never deletes a job another operator just replayed: one of the two is refused', async () => {
    await deadLetters(['k1', 'k2', 'k3'], 'boom');
    afterStateCheck('k1', () => replay('k1'));
    await expect(purgeJob(queues.events, 'k1')).rejects.toThrowError(
      /^job "k1" in queue events is no longer failed: it was replayed or removed meanwhile$/,
    );
    expect(await queues.events.getJobState('k1')).toBe('waiting');

    afterStateCheck('k2', () => replay('k2'));
    const bulk = await purgeFailed(queues.events, parseFilter({ reason: 'boom' }), {});
    expect(bulk.done).toEqual(['k3']);
    expect(bulk.skipped).toEqual([{ id: 'k2', why: 'job "k2" in queue events is no longer failed: it was replayed or removed meanwhile' }]);
    expect(await queues.events.getJobState('k2')).toBe('waiting');

    // The other way round: once the purge has taken the job, BullMQ's retry (the replay) refuses it.
    await deadLetters(['k4'], 'boom');
    let retried: unknown;
    vi.spyOn(Job.prototype, 'remove').mockImplementationOnce(async function (this: Job, ...args) {
      retried = await (await Job.fromId(queues.events, 'k4'))!.retry('failed').then(
        () => 'replayed',
        (err: { code?: unknown }) => err.code,
      );
      return remove.apply(this, args);
    });
    await purgeJob(queues.events, 'k4');
    expect(retried).toBe(ErrorCode.JobNotInState);
    expect(await queues.events.getJob('k4')).toBeUndefined();
  });

  /** What a replay or purge reported: done, refused (DlqError), or its other error. */
  const outcome = (run: Promise<unknown>) =>
    run.then(
      () => 'done',
      (err: unknown) => (err instanceof DlqError ? 'refused' : err),
    );

  it('a replay and a purge of one job at once: one of the two is refused, never both done and the job gone', async () => {
    // The replay has marked the job; a purge claims it before the replay's retry, and deletes it once the replay is over.
    await deadLetters(['n1'], 'boom');
    const claimed = Promise.withResolvers<void>();
    let [replayed, purged]: Array<Promise<unknown>> = [];
    vi.spyOn(Job.prototype, 'remove').mockImplementationOnce(async function (this: Job, ...args) {
      claimed.resolve();
      await replayed;
      return remove.apply(this, args);
    });
    vi.spyOn(Job.prototype, 'retry').mockImplementationOnce(async function (this: Job, ...args) {
      purged = outcome(purgeJob(queues.events, 'n1'));
      await claimed.promise;
      return retry.apply(this, args);
    });
    replayed = outcome(replay('n1'));
    expect([await replayed, await purged]).toEqual(['refused', 'done']);
    expect(await queues.events.getJob('n1')).toBeUndefined();
  });

  it.each([
    ['the first', ['done', 'refused']],
    ['the second', ['refused', 'done']],
  ])('two replays of one job at once, %s to mark it retrying first: the other is refused', async (_, expected) => {
    // Both have marked the job before either retries.
    await deadLetters(['o1'], 'boom');
    const [secondAtRetry, secondMayRetry] = [Promise.withResolvers<void>(), Promise.withResolvers<void>()];
    let second: Promise<unknown> | undefined;
    vi.spyOn(Job.prototype, 'retry')
      .mockImplementationOnce(async function (this: Job, ...args) {
        second = outcome(replay('o1'));
        await secondAtRetry.promise;
        if (expected[0] === 'done') return retry.apply(this, args).finally(secondMayRetry.resolve);
        secondMayRetry.resolve();
        await second;
        return retry.apply(this, args);
      })
      .mockImplementationOnce(async function (this: Job, ...args) {
        secondAtRetry.resolve();
        await secondMayRetry.promise;
        return retry.apply(this, args);
      });
    expect([await outcome(replay('o1')), await second]).toEqual(expected);
    expect(await queues.events.getJobState('o1')).toBe('waiting');
  });

  it('a job whose removal is refused (locked) stays failed, and the refusal is one line', async () => {
    await deadLetters(['l1', 'l2'], 'boom');
    const scores = await redis.zrange(queues.events.toKey('failed'), 0, -1, 'WITHSCORES');
    for (const id of ['l1', 'l2']) await redis.set(`${queues.events.toKey(id)}:lock`, 'a-worker-token');
    await expect(purgeJob(queues.events, 'l1')).rejects.toThrowError(
      /^job "l1" in queue events is no longer failed: Job l1 could not be removed because it is locked/,
    );
    const bulk = await purgeFailed(queues.events, {}, {});
    expect(bulk.skipped.map((s) => s.id).sort()).toEqual(['l1', 'l2']);
    expect(await redis.zrange(queues.events.toKey('failed'), 0, -1, 'WITHSCORES')).toEqual(scores);
  });

  it('a bulk purge or replay by reason leaves a job that failed again meanwhile with another reason', async () => {
    // Replayed and failed again with a new reason: m1 and m3 before the bulk command fetches them for their turn
    // (their second fetch, after the scan's), m2 just after.
    await deadLetters(['m1', 'm2'], 'old reason');
    const failsAgain = async (id: string) => {
      await replay(id);
      await deadLetters([id], 'new reason');
    };
    const fromId = Job.fromId.bind(Job);
    const fetched = new Map<string, number>();
    vi.spyOn(Job, 'fromId').mockImplementation(async (q, id) => {
      fetched.set(id, (fetched.get(id) ?? 0) + 1);
      if (fetched.get(id) !== 2) return fromId(q, id);
      if (id !== 'm2') await failsAgain(id);
      const job = await fromId(q, id);
      if (id === 'm2') await failsAgain(id);
      return job;
    });
    const purged = await purgeFailed(queues.events, parseFilter({ reason: '^old reason$' }), {});
    expect(purged.done).toEqual([]);
    expect(purged.skipped).toEqual([
      { id: 'm1', why: 'no longer matches' },
      { id: 'm2', why: 'job "m2" in queue events is no longer failed: it was replayed or removed meanwhile' },
    ]);
    for (const id of ['m1', 'm2']) expect((await queues.events.getJob(id))?.failedReason).toBe('new reason');

    await deadLetters(['m3'], 'old reason');
    const replayed = await replayFailed(queues.events, parseFilter({ reason: '^old reason$' }), { dedupeWindowMs: DAY });
    expect(replayed).toMatchObject({ done: [], skipped: [{ id: 'm3', why: 'no longer matches' }] });
    expect(await queues.events.getJobState('m3')).toBe('failed');
  });
});

describe('dlq command line', () => {
  const deps = () => ({ queues, dedupeWindowMs: DAY });

  it('list prints a table and a per-queue summary; --json prints the jobs', async () => {
    await failJobs(queues.seal, [{ data: {}, opts: { jobId: 'seal-1' } }], () => 'fold failed: NOSCRIPT');
    const c = io();
    expect(await runDlqCli(['list'], deps(), c.io)).toBe(0);
    expect(c.out[0]).toMatch(/^QUEUE\s+ID\s+AGE\s+ATTEMPTS\s+REASON$/);
    expect(c.out[1]).toMatch(/^seal\s+seal-1\s+\d+s\s+1\s+fold failed: NOSCRIPT$/);
    expect(c.out.at(-1)).toBe('events: 0 failed; seal: 1 failed; dynamo-writes: 0 failed; maintenance: 0 failed');

    const j = io();
    expect(await runDlqCli(['list', '--queue', 'seal', '--json'], deps(), j.io)).toBe(0);
    expect(JSON.parse(j.out.join('\n'))).toEqual([
      expect.objectContaining({ queue: 'seal', id: 'seal-1', reason: 'fold failed: NOSCRIPT', attemptsMade: 1 }),
    ]);
  });

  it('purge never prompts: without --yes it refuses and deletes nothing', async () => {
    await failJobs(queues.events, [{ data: batch('b-p'), opts: { jobId: 'p1' } }], () => 'boom');
    const c = io();
    expect(await runDlqCli(['purge', 'events', '--all'], deps(), c.io)).toBe(2);
    expect(c.err[0]).toBe('tally: purge deletes failed jobs for good and never asks: add --yes (or --dry-run to see what it would delete)');
    expect(await queues.events.getFailedCount()).toBe(1);

    const d = io();
    expect(await runDlqCli(['purge', 'events', '--all', '--dry-run'], deps(), d.io)).toBe(0);
    expect(d.out.at(-1)).toBe('dry run: would purge 1 of 1 matching failed jobs in events');
    expect(await queues.events.getFailedCount()).toBe(1);

    const y = io();
    expect(await runDlqCli(['purge', 'events', '--all', '--yes'], deps(), y.io)).toBe(0);
    expect(y.out.at(-1)).toBe('purged 1 of 1 matching failed jobs in events');
    expect(await queues.events.getFailedCount()).toBe(0);
  });

  it('bulk replay needs --all or a filter, drives the progress display, and names bad input', async () => {
    await failJobs(
      queues.events,
      [
        { data: batch('b-r1'), opts: { jobId: 'r1' } },
        { data: batch('b-r2'), opts: { jobId: 'r2' } },
      ],
      () => 'boom',
    );
    const u = io();
    expect(await runDlqCli(['replay', 'events'], deps(), u.io)).toBe(2);
    expect(u.err[0]).toBe('tally: replay <queue> needs an id, --all, or a filter (--reason, --older-than, --newer-than)');
    const bad = io();
    expect(await runDlqCli(['replay', 'events', '--older-than', '10 minutes'], deps(), bad.io)).toBe(2);
    expect(bad.err[0]).toBe('tally: "10 minutes" is not a duration; use e.g. 30s, 10m, 2h, 7d or 1h30m');
    const q = io();
    expect(await runDlqCli(['replay', 'evnts', '--all'], deps(), q.io)).toBe(2);
    expect(q.err[0]).toBe('tally: unknown queue "evnts"; queues: events, seal, dynamo-writes, maintenance');

    const bars: string[] = [];
    const c = io();
    const code = await runDlqCli(
      ['replay', 'events', '--all'],
      {
        ...deps(),
        progress: (label, total) => {
          bars.push(`start ${label} ${total}`);
          return { update: (n) => bars.push(`update ${n}`), stop: () => bars.push('stop') };
        },
      },
      c.io,
    );
    expect(code).toBe(0);
    expect(c.out.at(-1)).toBe('replayed 2 of 2 matching failed jobs in events');
    expect(bars).toEqual(['start replay events 2', 'update 1', 'update 2', 'stop']);
    expect(await queues.events.getWaitingCount()).toBe(2);

    const one = io();
    expect(await runDlqCli(['replay', 'events', 'r1'], deps(), one.io)).toBe(1);
    expect(one.err[0]).toBe('tally: job "r1" in queue events is waiting, not failed; only failed jobs are replayed');
  });
});

describe('options a command does not take', () => {
  const deps = () => ({ queues, dedupeWindowMs: DAY });

  it('are refused with a usage error naming them, and nothing is purged or replayed: purge --limit 10 is no purge of every match', async () => {
    await failJobs(
      queues.events,
      Array.from({ length: 3 }, (_, i) => ({ data: batch(`b-l${i}`), opts: { jobId: `l${i}` } })),
      () => 'unknown store X',
    );
    const purge = io();
    expect(await runDlqCli(['purge', 'events', '--reason', 'unknown store', '--limit', '1', '--yes'], deps(), purge.io)).toBe(2);
    expect(purge.err[0]).toBe(
      'tally: purge takes no --limit: purge acts on every failed job that matches; narrow the match with --reason, --older-than or --newer-than (see it first with --dry-run), or give one job id',
    );
    expect(await queues.events.getFailedCount()).toBe(3);

    const refused: Array<[string[], string]> = [
      [['replay', 'events', '--all', '--limit', '1'], 'tally: replay takes no --limit: replay acts on every failed job'],
      [['replay', 'events', '--all', '--json'], 'tally: replay takes no --json: only list and show print JSON'],
      [['purge', 'events', '--all', '--yes', '--queue', 'seal'], 'tally: purge takes no --queue: give the queue as the first argument'],
      [['purge', 'events', '--all', '--yes', '--past-dedupe-window'], 'tally: purge takes no --past-dedupe-window'],
      [['replay', 'events', 'l0', '--yes'], 'tally: replay takes no --yes'],
      [['show', 'events', 'l0', '--reason', 'x'], 'tally: show takes no --reason'],
      [['list', '--dry-run'], 'tally: list takes no --dry-run'],
    ];
    for (const [argv, message] of refused) {
      const c = io();
      expect(await runDlqCli(argv, deps(), c.io), argv.join(' ')).toBe(2);
      expect(c.err[0], argv.join(' ')).toMatch(message);
    }
    expect(await queues.events.getFailedCount()).toBe(3);
  });

  it('checks the whole command line before it connects: a usage error never waits for Redis', async () => {
    const usage: string[][] = [
      ['replay', 'events'],
      ['replay', 'events', 'l0', '--all'],
      ['replay', 'events', 'a', 'b', 'c'],
      ['replay', 'events', '--all', '--reason', 'x'],
      ['purge', 'events', '--all'],
      ['list', '--limit', '-1'],
      ['list', '--queue', 'nope'],
      ['show', 'nope', 'l0'],
      ['replay', 'events', '--older-than', 'soon'],
      ['frobnicate'],
    ];
    for (const argv of usage) {
      let connected = false;
      const c = io();
      const code = await runDlqCli(
        argv,
        async () => {
          connected = true;
          return deps();
        },
        c.io,
      );
      expect([code, connected], argv.join(' ')).toEqual([2, false]);
      // The reason, at most the command's synopsis, and where the help is: never the whole help.
      expect(c.err.length, argv.join(' ')).toBeLessThan(6);
      expect(c.err.at(-1), argv.join(' ')).toBe('see: npm run dlq -- --help');
    }
    // A well-formed command connects, once.
    let opened = 0;
    const c = io();
    const lazy = async () => (opened++, deps());
    expect(await runDlqCli(['list', '--queue', 'events'], lazy, c.io)).toBe(0);
    expect(opened).toBe(1);
  });
});

describe('a connection lost in the middle of a command', () => {
  // A connection of the tool's own, as run.ts opens one, which the test drops (ioredis does not reconnect after
  // disconnect(): every command after it fails with "Connection is closed.").
  let connection: Redis;
  let tool: TallyQueues;
  beforeEach(() => {
    connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    tool = createQueues(connection);
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await closeQueues(tool).catch(() => undefined);
    connection.disconnect();
  });
  /** Runs `argv` on the tool's connection; the progress display hears of each job done: the connection drops once the first one is. */
  async function dropAfterFirstJob(argv: string[]) {
    const c = io();
    const progress = () => ({ update: (done: number) => void (done === 1 && connection.disconnect()), stop: () => undefined });
    const code = await runDlqCli(argv, { queues: tool, dedupeWindowMs: DAY, progress }, c.io);
    return { code, out: c.out, err: c.err };
  }

  it('a replay whose retry fails on the connection says so, not "no longer failed"', async () => {
    await failJobs(queues.events, [{ data: batch('b-c1'), opts: { jobId: 'c1' } }], () => 'boom');
    const retry = Job.prototype.retry;
    vi.spyOn(Job.prototype, 'retry').mockImplementationOnce(function (this: Job, ...args) {
      connection.disconnect();
      return retry.apply(this, args);
    });
    const c = io();
    expect(await runDlqCli(['replay', 'events', 'c1'], { queues: tool, dedupeWindowMs: DAY }, c.io)).toBe(1);
    expect(c.err).toEqual(['tally: Connection is closed.']);
    expect(await queues.events.getJobState('c1')).toBe('failed');
  });

  it('a bulk replay stops at the job it could not do and prints what it did before', async () => {
    // One failure after the other: the replay takes them oldest failure first, d1 d2 d3.
    for (const id of ['d1', 'd2', 'd3']) await failJobs(queues.events, [{ data: batch(`b-${id}`), opts: { jobId: id } }], () => 'boom');
    expect(await dropAfterFirstJob(['replay', 'events', '--reason', 'boom'])).toEqual({
      code: 1,
      out: ['replayed 1 of 3 matching failed jobs in events (stopped at job d2, 1 not tried)'],
      err: ['tally: replay stopped at job d2: Connection is closed. (the same command again goes on with the rest)'],
    });
    expect(await Promise.all(['d1', 'd2', 'd3'].map((id) => queues.events.getJobState(id)))).toEqual(['waiting', 'failed', 'failed']);
  });

  it('a bulk purge the same way', async () => {
    for (const id of ['e1', 'e2']) await failJobs(queues.seal, [{ data: {}, opts: { jobId: id } }], () => 'boom');
    expect(await dropAfterFirstJob(['purge', 'seal', '--all', '--yes'])).toEqual({
      code: 1,
      out: ['purged 1 of 2 matching failed jobs in seal (stopped at job e2, 0 not tried)'],
      err: ['tally: purge stopped at job e2: Connection is closed. (the same command again goes on with the rest)'],
    });
    expect(await queues.seal.getJob('e1')).toBeUndefined();
    expect(await queues.seal.getJobState('e2')).toBe('failed');
  });
});

describe('a purge or replay whose command ioredis sends again', () => {
  let connection: Redis;
  let tool: TallyQueues;
  beforeEach(() => {
    connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    tool = createQueues(connection);
  });
  afterEach(async () => {
    await closeQueues(tool);
    connection.disconnect();
  });
  /** Makes the tool's connection run each `name` command twice, the first one's answer lost. */
  const sentTwice = (name: string) => {
    const command = (connection as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[name]!.bind(connection);
    Object.assign(connection, { [name]: async (...args: unknown[]) => (await command(...args), command(...args)) });
  };

  it('a purge deletes the job and says so; it never leaves the job out of the failed set undeleted', async () => {
    // A connection lost after Redis ran the claim but before its answer came back: ioredis sends the command again once
    // it has reconnected (autoResendUnfulfilledCommands), so the claim runs twice. Seen on an npm start stack, its
    // redis-server SIGKILLed during `purge dynamo-writes --reason … --yes`: "skipped …: is no longer failed: it was
    // replayed or removed meanwhile", and the job left in no state at all (show: "state: unknown"), which no command
    // could purge or replay, and whose id BullMQ then ignores every add of (a flush of its row, a batch sent again).
    await failJobs(
      queues.events,
      ['r1', 'r2', 'r3'].map((id) => ({ data: batch(`b-${id}`), opts: { jobId: id } })),
      () => 'boom',
    );
    // The claim is defined on the tool's connection at the first purge.
    const define = connection.defineCommand.bind(connection);
    vi.spyOn(connection, 'defineCommand').mockImplementation((name, definition) => {
      define(name, definition);
      if (name === 'dlqClaimFailed') sentTwice(name);
    });

    const deps = { queues: tool, dedupeWindowMs: DAY };
    const one = io();
    expect(await runDlqCli(['purge', 'events', 'r1', '--yes'], deps, one.io)).toBe(0);
    expect(one.out).toEqual(['purged job r1 in events']);
    const bulk = io();
    expect(await runDlqCli(['purge', 'events', '--all', '--yes'], deps, bulk.io)).toBe(0);
    expect(bulk.out).toEqual(['purged 2 of 2 matching failed jobs in events']);
    for (const id of ['r1', 'r2', 'r3']) expect(await redis.exists(queues.events.toKey(id)), id).toBe(0);
  });

  it('a replay says it replayed the job, not that someone else did (skipped, exit 1)', async () => {
    await failJobs(
      queues.events,
      ['s1', 's2', 's3'].map((id) => ({ data: batch(`b-${id}`), opts: { jobId: id } })),
      () => 'boom',
    );
    // BullMQ's own script of job.retry, defined on the connection once it is ready.
    await tool.events.waitUntilReady();
    const reprocess = Object.keys(connection).find((name) => name.startsWith('reprocessJob'));
    sentTwice(reprocess!);

    const deps = { queues: tool, dedupeWindowMs: DAY };
    const one = io();
    expect(await runDlqCli(['replay', 'events', 's1'], deps, one.io)).toBe(0);
    expect(one.out).toEqual([expect.stringMatching(/^replayed job s1 in events \(failed \d+s ago: boom\)$/)]);
    const bulk = io();
    expect(await runDlqCli(['replay', 'events', '--all'], deps, bulk.io)).toBe(0);
    expect(bulk.out).toEqual(['replayed 2 of 2 matching failed jobs in events']);
    expect(await Promise.all(['s1', 's2', 's3'].map((id) => queues.events.getJobState(id)))).toEqual(['waiting', 'waiting', 'waiting']);
  });
});

describe('sharded queues (QUEUE_SHARDS > 1)', () => {
  it('lists, shows, replays and purges failed jobs of every shard', async () => {
    const sharded = createQueues(redis, { keyPrefix: 't', shards: 3 });
    try {
      // A store of shard 1 and one of shard 2: their jobs go to those shards' queues only.
      const storeIn = (shard: number) => Array.from({ length: 100 }, (_, i) => `SHOP${i}`).find((s) => shardOfStore(s, 3) === shard)!;
      const [s1, s2] = [storeIn(1), storeIn(2)];
      const q1 = queueFor(sharded, QUEUE.events, s1);
      const q2 = queueFor(sharded, QUEUE.events, s2);
      expect([q1, q2]).toEqual([queueShards(sharded, QUEUE.events)[1], queueShards(sharded, QUEUE.events)[2]]);
      await failJobs(q1, [{ data: { ...batch('x1'), store: s1 }, opts: { jobId: 'x1' } }], () => 'boom in shard 1');
      await failJobs(
        q2,
        [
          { data: { ...batch('x2'), store: s2 }, opts: { jobId: 'x2' } },
          { data: { ...batch('x3'), store: s2 }, opts: { jobId: 'x3' } },
        ],
        () => 'boom in shard 2',
      );
      const deps = { queues: sharded, dedupeWindowMs: DAY };
      const shards: Array<[string, number]> = [
        ['x1', 1],
        ['x2', 2],
        ['x3', 2],
      ];
      await expectShardedDeadLetters(deps, shards, [q2, 'x2']);

      const all = io();
      expect(await runDlqCli(['replay', 'events', '--reason', 'shard 1'], deps, all.io)).toBe(0);
      expect(all.out.at(-1)).toBe('replayed 1 of 1 matching failed jobs in events');
      expect(await q1.getJobState('x1')).toBe('waiting');

      const purge = io();
      expect(await runDlqCli(['purge', 'events', '--all', '--yes'], deps, purge.io)).toBe(0);
      expect(purge.out.at(-1)).toBe('purged 1 of 1 matching failed jobs in events');
      expect(await q2.getJob('x3')).toBeUndefined();
      expect((await listFailed(queueShards(sharded, QUEUE.events), {}, { limit: 10 })).total).toBe(0);
    } finally {
      await closeQueues(sharded);
    }
  });
});
