import { Queue, Worker, type JobType } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WaitTimeoutError, startRedis, waitFor, waitForQueuesIdle, type RedisHandle } from './index';

let redis: RedisHandle;
const closers: Array<() => Promise<unknown>> = [];
let n = 0;

function connection() {
  return { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
}

function queue(): Queue {
  const q = new Queue(`idle-test-${++n}`, { connection: connection() });
  closers.push(() => q.close());
  return q;
}

function worker(name: string, fn: (data: { i: number }) => Promise<void>): Worker {
  const w = new Worker(name, async (job) => fn(job.data as { i: number }), { connection: connection(), concurrency: 3 });
  closers.push(() => w.close());
  return w;
}

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await redis.stop();
});

describe('waitForQueuesIdle', () => {
  it('waits until a worker has processed every job, follow-up jobs included', async () => {
    const first = queue();
    const second = queue();
    const seen: number[] = [];
    worker(first.name, async ({ i }) => {
      await new Promise((r) => setTimeout(r, 20));
      // Each job hands on to the next queue: idle only once both are drained.
      await second.add('next', { i: i + 100 });
      seen.push(i);
    });
    worker(second.name, async ({ i }) => {
      await new Promise((r) => setTimeout(r, 20));
      seen.push(i);
    });
    await first.addBulk(Array.from({ length: 10 }, (_, i) => ({ name: 'job', data: { i } })));

    await waitForQueuesIdle([first, second]);

    expect(seen.length).toBe(20);
    expect(seen.filter((i) => i >= 100).sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i + 100));
    expect(await first.getJobCounts('completed')).toEqual({ completed: 10 });
    expect(await second.getJobCounts('completed')).toEqual({ completed: 10 });
  });

  it('times out naming each busy queue and its counts', async () => {
    const q = queue();
    await q.addBulk([1, 2, 3].map((i) => ({ name: 'job', data: { i } })));
    await q.add('later', { i: 4 }, { delay: 60_000 });
    const err = await waitForQueuesIdle([q], { timeoutMs: 200, includeDelayed: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as Error).message).toBe(`queues not idle after 200ms: ${q.name} {waiting=3, delayed=1}`);
  });

  it('ignores delayed jobs unless includeDelayed', async () => {
    const q = queue();
    const done: number[] = [];
    worker(q.name, async ({ i }) => {
      done.push(i);
    });
    // Due in an hour: certainly still delayed throughout, however slow the machine.
    const job = await q.add('later', { i: 1 }, { delay: 3_600_000 });

    await waitForQueuesIdle([q]);
    expect(done).toEqual([]);
    expect(await q.getJobCounts('delayed')).toEqual({ delayed: 1 });

    // With includeDelayed the delayed job keeps it waiting: poll after poll sees it and does not call it idle.
    const polls: Array<Record<string, number>> = [];
    const watched = {
      name: q.name,
      getJobCounts: async (...types: JobType[]) => {
        const counts = await q.getJobCounts(...types);
        polls.push(counts);
        return counts;
      },
    };
    let idle = false;
    const waiting = waitForQueuesIdle([watched], { includeDelayed: true }).then(() => (idle = true));
    await waitFor(() => polls.length >= 3, { message: 'three polls' });
    expect(idle).toBe(false);
    expect(polls.slice(0, 3).map((c) => c.delayed)).toEqual([1, 1, 1]);

    // Once it is due, it runs, and only then are the queues idle.
    await job.promote();
    await waiting;
    expect(done).toEqual([1]);
    expect(polls.at(-1)).toMatchObject({ delayed: 0, waiting: 0, active: 0 });
  });

  it('does not hang when Redis does not answer', async () => {
    const hung = new Queue('idle-test-hung', { connection: connection() });
    closers.push(() => hung.close());
    await hung.waitUntilReady();
    await redis.kill('SIGSTOP');
    try {
      const started = Date.now();
      const err = await waitForQueuesIdle([hung], { timeoutMs: 300 }).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect((err as Error).message).toBe('queues not idle after 300ms: last poll failed: getJobCounts did not answer');
    } finally {
      await redis.kill('SIGCONT');
    }
  });

  it('reports a failing poll (Redis down) instead of hanging', async () => {
    const dead = new Queue('idle-test-dead', {
      connection: { host: '127.0.0.1', port: 1, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null },
    });
    dead.on('error', () => {});
    closers.push(() => dead.close().catch(() => {}));
    const err = await waitForQueuesIdle([dead], { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as Error).message).toMatch(/^queues not idle after 200ms: last poll failed: /);
  });
});
