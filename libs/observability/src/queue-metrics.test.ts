import { EventEmitter } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import { createMetrics, failedJobsCounter, queueDepthMetrics } from './index';

/** A worker as BullMQ's emits 'failed': after each failed attempt, the job with `finishedOn` once it is in the failed set. */
const fakeWorker = (name: string) => Object.assign(new EventEmitter(), { name });
const attempt = (finishedOn?: number) => ({ id: '1', ...(finishedOn === undefined ? {} : { finishedOn }) });

describe('failedJobsCounter', () => {
  it('counts a job when it lands in the failed set, not at each retried attempt, per queue and from 0', async () => {
    const { registry } = createMetrics({ app: 'bucket-aggregator' });
    // Two shards of events (one queue name), and seal.
    const events = [fakeWorker('events'), fakeWorker('events')];
    const seal = fakeWorker('seal');
    failedJobsCounter(registry, [...events, seal]);
    expect(await registry.metrics()).toContain('tally_jobs_failed_total{queue="seal",app="bucket-aggregator"} 0');

    events[0]!.emit('failed', attempt(), new Error('retried'), 'active');
    events[0]!.emit('failed', attempt(), new Error('retried'), 'active');
    events[0]!.emit('failed', attempt(1_700_000_000_000), new Error('attempts used up'), 'active');
    events[1]!.emit('failed', attempt(1_700_000_000_001), new Error('unrecoverable'), 'active');

    const text = await registry.metrics();
    expect(text).toContain('# TYPE tally_jobs_failed_total counter');
    expect(text).toContain('tally_jobs_failed_total{queue="events",app="bucket-aggregator"} 2');
    expect(text).toContain('tally_jobs_failed_total{queue="seal",app="bucket-aggregator"} 0');
  });
});

describe('queueDepthMetrics', () => {
  it('keeps one read per queue outstanding: scrapes while it gets no answer share it, and queue none of their own', async () => {
    const { registry } = createMetrics({ app: 'bucket-aggregator' });
    // A connection whose Redis is away: the read waits (offline queue, no retry limit) until it answers.
    let answer: (counts: Record<string, number>) => void = () => {};
    const getJobCounts = vi.fn(() => new Promise<Record<string, number>>((resolve) => (answer = resolve)));
    queueDepthMetrics(registry, [{ name: 'events', getJobCounts }], { timeoutMs: 1 });

    let text = '';
    for (let i = 0; i < 5; i++) text = await registry.metrics();
    expect(getJobCounts).toHaveBeenCalledTimes(1);
    expect(text).toContain('tally_queue_metrics_errors_total{queue="events",app="bucket-aggregator"} 5');

    // Once it answers, the next scrape reads again.
    answer({ waiting: 7 });
    await new Promise((r) => setImmediate(r));
    getJobCounts.mockResolvedValue({ waiting: 3 });
    expect(await registry.metrics()).toContain('tally_queue_jobs{queue="events",state="waiting",app="bucket-aggregator"} 3');
    expect(getJobCounts).toHaveBeenCalledTimes(2);
  });
});
