import type { BucketStore } from '@tally/buckets';
import { compileRules, defaultRules } from '@tally/schema';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { eventsProcessor, type EventsProcessorDeps } from './events.processor';

describe('events jobs during an outage or a refused backlog', () => {
  it('log one line per kind and window, the next one carrying how many were not logged; every one is counted', async () => {
    let t = 5_000_000;
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const metrics = createAggregatorMetrics(new Registry());
    /** The processor, on the test's clock and log, with as much of a BucketStore as it uses. */
    const processor = (buckets: object, timeZoneOf: EventsProcessorDeps['timeZoneOf']) =>
      eventsProcessor({
        buckets: buckets as BucketStore,
        rules: compileRules(defaultRules),
        timeZoneOf,
        dedupeTtlSeconds: 86_400,
        metrics,
        log,
        now: () => t,
      });
    // The tenant directory is unreachable for store Z; every other store is unknown (no tenant).
    const run = processor({ storeDeleted: async () => false }, async (store) => {
      if (store === 'Z') throw new Error('DynamoDB unreachable');
      return undefined;
    });
    let delayed = 0;
    const job = (id: string, store: string, receivedAt = t) =>
      ({
        id,
        timestamp: receivedAt,
        attemptsStarted: 1,
        data: { batchId: `b-${id}`, store, events: [{ type: 'view', ts: t, dims: { product: 'P1' } }], receivedAt, source: 'http' },
        moveToDelayed: async () => void delayed++,
      }) as unknown as Job;

    // One window (10 s, the processor's clock): 300 batches wait for the time zone, 200 are refused for having no
    // tenant, 100 for being past the dedupe window.
    for (let i = 0; i < 300; i++) await expect(run(job(`z${i}`, 'Z'))).rejects.toBeInstanceOf(DelayedError);
    for (let i = 0; i < 200; i++) await expect(run(job(`u${i}`, 'U'))).rejects.toBeInstanceOf(UnrecoverableError);
    for (let i = 0; i < 100; i++) await expect(run(job(`o${i}`, 'U', t - 90_000_000))).rejects.toBeInstanceOf(UnrecoverableError);
    expect(delayed).toBe(300);
    expect(lines.map((l) => [l['msg'], l['jobId']])).toEqual([
      ['time zone unknown for now; batch waits', 'z0'],
      ['batch for a store with no tenant refused; it goes to the failed set', 'u0'],
      ['batch past the dedupe window refused; it goes to the failed set', 'o0'],
    ]);

    // The next window's first line of a kind says how many of that kind the last window dropped.
    t += 10_000;
    await expect(run(job('z-next', 'Z'))).rejects.toBeInstanceOf(DelayedError);
    expect(lines[3]).toMatchObject({ msg: 'time zone unknown for now; batch waits', jobId: 'z-next', suppressed: 299 });

    // Duplicates (every retry after a wait for replicas finds its batch applied) are throttled alike.
    const dup = processor(
      {
        storeDeleted: async () => false,
        apply: async () => ({ applied: false, deleted: false, seq: 0 }),
        registerStore: async () => undefined,
        sketches: { add: async () => undefined },
      },
      async () => 'UTC',
    );
    const before = lines.length;
    for (let i = 0; i < 50; i++) await dup(job(`d${i}`, 'D'));
    expect(lines.slice(before).map((l) => [l['msg'], l['jobId']])).toEqual([['duplicate batch skipped', 'd0']]);
    expect((await metrics.duplicateBatches.get()).values[0]!.value).toBe(50);

    const rejected = Object.fromEntries((await metrics.batchesRejected.get()).values.map((v) => [v.labels['reason'], v.value]));
    expect(rejected).toMatchObject({ unknown_store: 200, dedupe_window: 100 });
  });
});
