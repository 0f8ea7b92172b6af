import type { BucketStore } from '@tally/buckets';
import { createDynamoMeter, RetryableWriteError } from '@tally/dynamo';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DelayedError, type Job } from 'bullmq';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createWriterMetrics, flushProcessor } from './flush.processor';

describe('flush waits during an outage', () => {
  it('log one line per reason and window, the next one carrying how many were not logged; every wait is counted', async () => {
    let t = 1_000_000;
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const metrics = createWriterMetrics(new Registry());
    // Every row's outbox read fails as the row's store says: DynamoDB throttling (as a write would) or Redis gone.
    const buckets = {
      readOutbox: (store: string) =>
        Promise.reject(
          store === 'R' ? new Error('Connection is closed.') : new RetryableWriteError('DynamoDB throttled (ThrottlingException)'),
        ),
    } as unknown as BucketStore;
    const run = flushProcessor({
      buckets,
      dynamo: { client: {} as DynamoDBClient, table: 't', meter: createDynamoMeter() },
      metrics,
      log,
      maxBackoffMs: 200,
      now: () => t,
    });
    let delayed = 0;
    const flush = async (id: string, store: string) => {
      const job = { id, data: { store, pk: `${store}#row` }, attemptsStarted: 3, moveToDelayed: async () => void delayed++ };
      await expect(run(job as unknown as Job)).rejects.toBeInstanceOf(DelayedError);
    };

    // One window (10 s, the flushes' clock): 500 jobs wait for DynamoDB, 20 for Redis.
    for (let i = 0; i < 500; i++) await flush(`d${i}`, 'S');
    for (let i = 0; i < 20; i++) await flush(`r${i}`, 'R');
    t += 9_999;
    await flush('d-late', 'S');
    expect(delayed).toBe(521);
    expect(lines.map((l) => [l['msg'], l['jobId']])).toEqual([
      ['DynamoDB not writable now; flush waits', 'd0'],
      ['Redis not available now; flush waits', 'r0'],
    ]);
    expect(lines[0]).toMatchObject({ level: 40, store: 'S', pk: 'S#row', err: 'DynamoDB throttled (ThrottlingException)', waits: 2 });
    expect(lines[0]).not.toHaveProperty('suppressed');

    // The next window's first wait is logged with the count of those the last window dropped.
    t += 1;
    await flush('d-next', 'S');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ msg: 'DynamoDB not writable now; flush waits', jobId: 'd-next', suppressed: 500 });

    const waits = Object.fromEntries((await metrics.waits.get()).values.map((v) => [v.labels['reason'], v.value]));
    expect(waits).toEqual({ dynamodb: 502, redis: 20, replicas: 0 });
  });
});
