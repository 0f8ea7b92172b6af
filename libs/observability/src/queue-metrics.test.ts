import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createMetrics, failedJobsCounter } from './index';

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
