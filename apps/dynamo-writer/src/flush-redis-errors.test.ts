import type { BucketStore } from '@tally/buckets';
import { createDynamoMeter } from '@tally/dynamo';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DelayedError, type Job } from 'bullmq';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createWriterMetrics, flushProcessor } from './flush.processor';

describe('flush processor and Redis errors', () => {
  /** One flush whose outbox read throws `err`, as the writer's processor runs it on a BullMQ job. */
  async function flushWith(err: Error) {
    const metrics = createWriterMetrics(new Registry());
    const delayed: number[] = [];
    const job = { id: 'j', data: { store: 'S', pk: 'S' }, attemptsStarted: 1, moveToDelayed: async (at: number) => void delayed.push(at) };
    const buckets = { readOutbox: () => Promise.reject(err) } as unknown as BucketStore;
    const run = flushProcessor({
      buckets,
      dynamo: { client: {} as DynamoDBClient, table: 't', meter: createDynamoMeter() },
      metrics,
      log: pino({ level: 'silent' }),
      maxBackoffMs: 200,
    });
    const thrown = await run(job as unknown as Job).then(
      () => undefined,
      (e: unknown) => e,
    );
    const waits = Object.fromEntries((await metrics.waits.get()).values.map((v) => [v.labels['reason'], v.value]));
    return { thrown, delayed: delayed.length, waits };
  }

  it('delays the job, counted with reason redis, when Redis does not answer', async () => {
    const r = await flushWith(new Error('Connection is closed.'));
    expect(r.thrown).toBeInstanceOf(DelayedError);
    expect(r.delayed).toBe(1);
    expect(r.waits).toEqual({ dynamodb: 0, redis: 1, replicas: 0 });
  });

  it('rethrows a programming error as it is (BullMQ attempts, then the failed set)', async () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'entries')");
    const r = await flushWith(bug);
    expect(r.thrown).toBe(bug);
    expect(r.delayed).toBe(0);
    expect(r.waits).toEqual({ dynamodb: 0, redis: 0, replicas: 0 });
  });
});
