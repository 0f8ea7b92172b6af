import { waitFor } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import { Worker, type JobsOptions, type Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { expect } from 'vitest';
import { runDlqCli } from './cli';

let serverUrl: string;

/**
 * In a test file: a redis-server of its own, emptied before each test, and a connection to it without a per-command
 * retry limit (as BullMQ wants), handed to `ready` with the server's URL.
 */
export function useDlqRedis(ready: (redis: Redis, url: string) => void | (() => unknown)): void {
  useRedis((redis, server) => ready(redis, (serverUrl = server.url)), { connection: { maxRetriesPerRequest: null }, flushEachTest: true });
}

/** An events batch of `store` accepted at `receivedAt`, as the collector enqueues it. */
export const batch = (batchId: string, receivedAt = Date.now(), store = 'S1') => ({
  batchId,
  store,
  receivedAt,
  source: 'http',
  events: [{ type: 'view', ts: receivedAt, dims: { product: 'P1' } }],
});

/**
 * Adds the jobs and lets a worker fail each once with `reason(data)` (attempts: 1), so they land in the failed
 * set exactly as a dead letter does. The worker is closed before returning: nothing processes them afterwards.
 */
export async function failJobs(
  queue: Queue,
  jobs: Array<{ data: Record<string, unknown>; opts?: JobsOptions }>,
  reason: (data: any) => string,
): Promise<string[]> {
  const ids: string[] = [];
  for (const j of jobs) ids.push((await queue.add(queue.name, j.data, { attempts: 1, ...j.opts })).id!);
  const connection = new Redis(serverUrl, { maxRetriesPerRequest: null });
  const worker = new Worker(
    queue.name,
    async (job) => {
      throw new Error(reason(job.data));
    },
    { connection, prefix: queue.opts.prefix },
  );
  try {
    await waitFor(async () => (await Promise.all(ids.map((id) => queue.getJobState(id)))).every((s) => s === 'failed'), {
      message: `jobs ${ids.join(', ')} failed in ${queue.name}`,
    });
  } finally {
    await worker.close();
    await connection.quit();
  }
  return ids;
}

/** A command line's output, stdout and stderr lines apart. */
export const io = () => {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
};

/**
 * The failed events jobs of several queue shards, as the command line sees them: `list --json` gives each its shard
 * (`shards`: id and shard of every job), the summary counts them all, `show` names the shard, and a replay of one
 * (`replayed`: its queue shard and id) sets it waiting on its shard again.
 */
export async function expectShardedDeadLetters(
  deps: Parameters<typeof runDlqCli>[1],
  shards: Array<[string, number]>,
  [queue, id]: [Queue, string],
): Promise<void> {
  const listed = io();
  expect(await runDlqCli(['list', '--queue', 'events', '--json'], deps, listed.io)).toBe(0);
  const jobs = JSON.parse(listed.out.join('\n')) as Array<{ id: string; shard: number }>;
  expect(jobs.map((j) => [j.id, j.shard]).sort()).toEqual(shards);
  expect(listed.err).toEqual([]);
  const summary = io();
  expect(await runDlqCli(['list'], deps, summary.io)).toBe(0);
  expect(summary.out.at(-1)).toBe(`events: ${shards.length} failed; seal: 0 failed; dynamo-writes: 0 failed; maintenance: 0 failed`);
  expect(summary.err).toEqual([]);
  for (const [shown, shard] of shards) {
    const show = io();
    expect(await runDlqCli(['show', 'events', shown], deps, show.io)).toBe(0);
    expect(show.out).toContain(`shard:     ${shard}`);
    expect(show.err).toEqual([]);
  }
  const replay = io();
  expect(await runDlqCli(['replay', 'events', id], deps, replay.io)).toBe(0);
  expect(replay.err).toEqual([]);
  expect(await queue.getJobState(id)).toBe('waiting');
}
