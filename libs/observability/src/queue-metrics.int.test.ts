import { DelayedError, Queue, UnrecoverableError, Worker } from 'bullmq';
import { startRedis, waitFor, type RedisHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics, failedJobsCounter, queueDepthMetrics } from './index';

let redis: RedisHandle;
let events: Queue;
let writes: Queue;
let worker: Worker | undefined;

beforeAll(async () => {
  // appendfsync always: the test SIGKILLs Redis and expects every acknowledged job back from the AOF. Under
  // everysec a write is postponed while a background fsync is still running (up to 2 s), so a job acknowledged just
  // before the kill can be lost on a busy disk, which is everysec's promise and not what this test is about.
  redis = await startRedis({ appendfsync: 'always' });
  const connection = { host: '127.0.0.1', port: redis.port };
  events = new Queue('events', { connection });
  writes = new Queue('dynamo-writes', { connection });
  // A queue whose Redis goes away keeps reconnecting; errors are expected in the outage test.
  events.on('error', () => {});
  writes.on('error', () => {});
});
afterAll(async () => {
  await worker?.close();
  await Promise.all([events.close(), writes.close()]);
  await redis.stop();
});

function series(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const [labels, value] = line.slice(name.length).split(' ');
    out[labels!] = Number(value);
  }
  return out;
}

describe('queueDepthMetrics', () => {
  it('reports jobs per queue and state at scrape time, and keeps the last values while Redis is down', async () => {
    const { registry } = createMetrics({ app: 'aggregator' });
    queueDepthMetrics(registry, [events, writes], { timeoutMs: 200 });

    await events.addBulk([1, 2, 3].map((i) => ({ name: 'batch', data: { i } })));
    await events.add('late', {}, { delay: 60_000 });
    await writes.add('flush', {}, { priority: 5 });
    await writes.add('doomed', {}, { attempts: 1 });
    worker = new Worker(
      writes.name,
      async (job) => {
        if (job.name === 'doomed') throw new Error('no');
      },
      { connection: { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null } },
    );
    await waitFor(async () => (await writes.getJobCounts('failed', 'completed')).failed === 1 && (await writes.getCompletedCount()) === 1);
    await worker.close();
    worker = undefined;

    const expected = {
      '{queue="events",state="waiting",app="aggregator"}': 3,
      '{queue="events",state="active",app="aggregator"}': 0,
      '{queue="events",state="delayed",app="aggregator"}': 1,
      '{queue="events",state="failed",app="aggregator"}': 0,
      '{queue="events",state="completed",app="aggregator"}': 0,
      '{queue="events",state="prioritized",app="aggregator"}': 0,
      '{queue="dynamo-writes",state="waiting",app="aggregator"}': 0,
      '{queue="dynamo-writes",state="active",app="aggregator"}': 0,
      '{queue="dynamo-writes",state="delayed",app="aggregator"}': 0,
      '{queue="dynamo-writes",state="failed",app="aggregator"}': 1,
      '{queue="dynamo-writes",state="completed",app="aggregator"}': 1,
      '{queue="dynamo-writes",state="prioritized",app="aggregator"}': 0,
    };
    const text = await registry.metrics();
    expect(text).toContain('# TYPE tally_queue_jobs gauge');
    expect(series(text, 'tally_queue_jobs')).toEqual(expected);
    expect(series(text, 'tally_queue_metrics_errors_total')).toEqual({
      '{queue="events",app="aggregator"}': 0,
      '{queue="dynamo-writes",app="aggregator"}': 0,
    });

    // Redis frozen: the scrape answers within the timeout, with the last values.
    await events.add('one more', {});
    await redis.kill('SIGSTOP');
    try {
      const started = Date.now();
      const frozen = await registry.metrics();
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(series(frozen, 'tally_queue_jobs')).toEqual(expected);
      expect(series(frozen, 'tally_queue_metrics_errors_total')).toEqual({
        '{queue="events",app="aggregator"}': 1,
        '{queue="dynamo-writes",app="aggregator"}': 1,
      });
    } finally {
      await redis.kill('SIGCONT');
    }

    // Redis gone: still no throw.
    await redis.kill('SIGKILL');
    const down = await registry.metrics();
    expect(series(down, 'tally_queue_jobs')).toEqual(expected);
    expect(series(down, 'tally_queue_metrics_errors_total')['{queue="events",app="aggregator"}']).toBe(2);

    // Back: fresh numbers again (AOF kept the jobs, including the one added before the freeze).
    await redis.restart();
    await waitFor(
      async () => {
        const waiting = series(await registry.metrics(), 'tally_queue_jobs')['{queue="events",state="waiting",app="aggregator"}'];
        if (waiting !== 4) throw new Error(`the scrape reads ${waiting} waiting events`);
        return true;
      },
      { timeoutMs: 10_000, message: 'the scrape to see 4 waiting events after the restart' },
    );
  });
});

describe('failedJobsCounter', () => {
  it("counts BullMQ's jobs as they land in the failed set: not a retried attempt nor a delay, and not less after a replay", async () => {
    const { registry } = createMetrics({ app: 'dynamo-writer' });
    const connection = { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
    const queue = new Queue('failing', { connection });
    const failing = new Worker(
      queue.name,
      async (job, token) => {
        if (job.name === 'unrecoverable') throw new UnrecoverableError('bad payload');
        if (job.name === 'delayed' && job.attemptsStarted === 1) {
          await job.moveToDelayed(Date.now() + 10, token);
          throw new DelayedError();
        }
        if (job.name !== 'delayed') throw new Error('no');
      },
      { connection },
    );
    failedJobsCounter(registry, [failing]);
    const failed = async () => series(await registry.metrics(), 'tally_jobs_failed_total')['{queue="failing",app="dynamo-writer"}'];
    try {
      expect(await failed()).toBe(0);
      await queue.add('retried', {}, { attempts: 3 });
      await queue.add('unrecoverable', {}, { attempts: 3 });
      await queue.add('delayed', {}, { attempts: 1 });
      await waitFor(async () => (await queue.getJobCounts('failed', 'completed')).failed === 2 && (await queue.getCompletedCount()) === 1);
      expect(await failed()).toBe(2);

      // A replay empties the failed set; the job fails again (its three attempts anew) and counts once more.
      const [retried] = (await queue.getFailed()).filter((j) => j.name === 'retried');
      await retried!.retry('failed', { resetAttemptsMade: true });
      await waitFor(async () => (await failed()) === 3);
      expect((await queue.getJobCounts('failed')).failed).toBe(2);
    } finally {
      await failing.close();
      await queue.close();
    }
  });
});
