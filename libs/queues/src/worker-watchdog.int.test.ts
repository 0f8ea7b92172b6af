import { waitFor } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import type { Job, Processor, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { QUEUE } from './names';
import { closeQueues, createQueues, type TallyQueues } from './queues';
import { WorkerWatchdog } from './worker-watchdog';
import { shardWorker } from './workers';

// The seal queue's Worker under its watchdog, on a real Redis, the checks run by hand on a clock moved by hand. A
// Worker is stranded as a failover strands one: its wait for jobs (BZPOPMIN, the backend's waitForJob) never returns.

const BOUND_MS = 30_000;
let redis: Redis;
let queues: TallyQueues;
let seal: Queue;
/** The checks' clock, moved by hand only. */
let clock: number;
const now = () => clock;
let warnings: string[];
let restarts: number;
let processed: string[];
let watchdog: WorkerWatchdog | undefined;

useRedis((r) => void (redis = r), { connection: { maxRetriesPerRequest: null }, flushEachTest: true });
beforeEach(() => {
  queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
  seal = queues[QUEUE.seal];
  clock = Date.now();
  warnings = [];
  restarts = 0;
  processed = [];
});
afterEach(async () => {
  await watchdog?.close(true);
  watchdog = undefined;
  await closeQueues(queues);
});

/** Makes the Worker's waits for jobs from now on never return; resolves once it is in one. */
function strand(w: Worker): Promise<void> {
  const backend = w.getBackend() as unknown as { waitForJob: () => Promise<unknown> };
  return new Promise((waiting) => {
    backend.waitForJob = () => {
      waiting();
      return new Promise(() => undefined);
    };
  });
}

/**
 * A watchdog over seal Workers made by shardWorker; `stranded[i]` strands the i-th Worker it makes from the start.
 * Resolves once the first Worker runs (and, stranded, waits for jobs).
 */
async function watch(stranded: boolean[], processor: Processor = async (job: Job) => void processed.push(job.id!)) {
  const made: Worker[] = [];
  const waiting: Array<Promise<void>> = [];
  watchdog = new WorkerWatchdog({
    queue: seal,
    processor,
    start: (p) => {
      const w = shardWorker(QUEUE.seal, p, seal.opts.prefix!, { connection: redis, concurrency: 2, lockMs: 30_000 });
      w.on('error', () => undefined);
      if (stranded[made.length]) waiting.push(strand(w));
      made.push(w);
      return w;
    },
    strandedAfterMs: BOUND_MS,
    log: { warn: (_obj, msg) => void warnings.push(msg) },
    now,
    onRestart: () => void restarts++,
  });
  await waitFor(() => made[0]!.isRunning(), { message: 'the first worker running' });
  await Promise.all(waiting);
  return { made, waiting };
}

it('closes a Worker stranded while a job is due, once the job has waited the bound, and starts one that takes it', async () => {
  const { made } = await watch([true]);
  await seal.add('seal', { shard: 0 }, { jobId: 'tick-1' });
  await watchdog!.check();
  clock += BOUND_MS - 1;
  await watchdog!.check();
  expect(restarts).toBe(0);
  expect(watchdog!.isRunning()).toBe(true);

  clock += 1;
  await watchdog!.check();
  expect(restarts).toBe(1);
  expect(warnings).toEqual(['seal worker stranded: a due job went untaken while it ran idle; closed by force and started again']);
  expect(made).toHaveLength(2);
  // Closed by force: its wait for jobs never returns, so BullMQ counts it as running for good.
  expect(made[0]!.closing).toBeDefined();
  expect(watchdog!.current).toBe(made[1]);
  await waitFor(() => processed.includes('tick-1'), { message: 'the new worker takes the job' });
  expect(watchdog!.isRunning()).toBe(true);
  // Nothing is due now: however long, no more restarts.
  clock += 10 * BOUND_MS;
  await watchdog!.check();
  expect(restarts).toBe(1);
});

it('says it is not running from the restart until a Worker takes a job, and restarts a stranded new one after the bound', async () => {
  const { made } = await watch([true, true]);
  // The scheduler's next job, delayed: due for the checks' clock, not for another minute of the real one.
  await seal.add('seal', { shard: 0 }, { jobId: 'repeat:sealer-0:1', delay: 60_000 });
  await watchdog!.check();
  expect(restarts).toBe(0);
  clock += 61_000;
  await watchdog!.check();
  clock += BOUND_MS;
  await watchdog!.check();
  expect(restarts).toBe(1);
  await waitFor(() => made[1]!.isRunning(), { message: 'the second worker running' });
  expect(watchdog!.isRunning()).toBe(false);
  // The second Worker is stranded too: its own bound counts from the restart.
  clock += BOUND_MS - 1;
  await watchdog!.check();
  expect(restarts).toBe(1);
  expect(watchdog!.isRunning()).toBe(false);
  clock += 1;
  await watchdog!.check();
  expect(restarts).toBe(2);
  expect(made).toHaveLength(3);
  // The third one would take it when it is due by the real clock: promoted by hand, it takes it now.
  await (await seal.getJob('repeat:sealer-0:1'))!.promote();
  await waitFor(() => processed.includes('repeat:sealer-0:1'), { message: 'the third worker takes the job' });
  expect(watchdog!.isRunning()).toBe(true);
});

it('leaves a Worker with a job in flight alone, and gives it the whole bound once it is idle again', async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const { made } = await watch([false], async (job: Job) => {
    if (job.id === 'long') await gate;
    processed.push(job.id!);
  });
  await seal.add('seal', { shard: 0 }, { jobId: 'long' });
  await waitFor(async () => (await seal.getJobCounts('active')).active === 1, { message: 'the long job active' });
  // From now on the Worker is stranded: the next job waits, with the long one still in flight.
  void strand(made[0]!);
  await seal.add('seal', { shard: 0 }, { jobId: 'next', delay: 60_000 });
  clock += 61_000;
  await watchdog!.check();
  clock += 3 * BOUND_MS;
  await watchdog!.check();
  expect(restarts).toBe(0);
  release();
  await waitFor(() => processed.includes('long'), { message: 'the long job done' });
  clock += BOUND_MS - 1;
  await watchdog!.check();
  expect(restarts).toBe(0);
  clock += 1;
  await watchdog!.check();
  expect(restarts).toBe(1);
});

it('counts the bound again from the first check that reads the jobs after one that could not', async () => {
  await watch([true]);
  await seal.add('seal', { shard: 0 }, { jobId: 'tick-1' });
  await watchdog!.check();
  clock += BOUND_MS - 1;
  const down = vi.spyOn(seal, 'getBackend').mockReturnValueOnce({ client: Promise.reject(new Error('Connection is closed.')) } as never);
  await expect(watchdog!.check()).rejects.toThrow('Connection is closed.');
  down.mockRestore();
  clock += 1;
  await watchdog!.check();
  clock += BOUND_MS - 1;
  await watchdog!.check();
  expect(restarts).toBe(0);
  clock += 1;
  await watchdog!.check();
  expect(restarts).toBe(1);
});

it('restarts nothing while no job is due: none queued, or the next one not due yet', async () => {
  await watch([true]);
  await watchdog!.check();
  clock += 10 * BOUND_MS;
  await watchdog!.check();
  await seal.add('seal', { shard: 0 }, { jobId: 'later', delay: 20 * BOUND_MS });
  await watchdog!.check();
  clock += 5 * BOUND_MS;
  await watchdog!.check();
  expect(restarts).toBe(0);
  expect(watchdog!.isRunning()).toBe(true);
});
