import { BucketEraser } from '@tally/buckets';
import { updatedTenantSchema } from '@tally/contracts';
import { allQueues, closeQueues, createQueues, QUEUE, type TallyQueues } from '@tally/queues';
import { getTenant, RETENTION_SETTLE_MS } from '@tally/tenants';
import { freePort } from '@tally/testing';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture } from '../test/fixture';
import type { AdminDeps } from './admin.route';
import type { QueryApiApp } from './app';

// A change of a store's visitor-history retention through the admin API schedules the restamp of its visitor items:
// one delayed job per store on the maintenance queue, which the dynamo-writer runs (apps/dynamo-writer
// restamp.int.test.ts); the answer says from when.

const OPERATOR = 'op_'.padEnd(40, 'r');
const f = useFixture();
let queues: TallyQueues;
let app: QueryApiApp;

const adminDeps = (maintenance: Pick<TallyQueues, typeof QUEUE.maintenance>): AdminDeps => ({
  db: f.db,
  erasure: { eraser: new BucketEraser({ redis: f.redis, buckets: f.buckets }), queues: [], tombstoneSeconds: 60 },
  maintenance,
  operatorToken: OPERATOR,
});

beforeAll(async () => {
  queues = createQueues(f.redis, { keyPrefix: 'rq', shards: 1 });
  app = await f.app({ admin: adminDeps(queues) });
});
afterAll(async () => {
  await closeQueues(queues);
});

const patch = (url: string, key: string, payload: object) => app.inject({ method: 'PATCH', url, headers: bearer(key), payload });
const op = (method: 'POST' | 'PATCH', url: string, payload: object) => app.inject({ method, url, headers: bearer(OPERATOR), payload });

/** The store's restamp jobs not yet done. */
async function pending(store: string): Promise<Job[]> {
  const jobs = await queues[QUEUE.maintenance].getJobs(['delayed', 'waiting', 'active', 'prioritized']);
  return jobs.filter((j) => j?.data?.store === store);
}

/** The one pending restamp job of the store, checked against the change it follows and the answer that named it. */
async function onlyJob(store: string, answer: { retentionRestampAt?: string }, changed: { after: number; before: number }) {
  const jobs = await pending(store);
  expect(jobs).toHaveLength(1);
  const job = jobs[0]!;
  expect(job.name).toBe(QUEUE.maintenance);
  expect(job.data).toEqual({ kind: 'restamp-retention', store, changedAt: expect.any(Number) });
  expect(await job.getState()).toBe('delayed');
  // The change is when the write was made; the job is due RETENTION_SETTLE_MS after it, as the answer says.
  expect(job.data.changedAt).toBeGreaterThanOrEqual(changed.after);
  expect(job.data.changedAt).toBeLessThanOrEqual(changed.before);
  expect(job.delay).toBe(RETENTION_SETTLE_MS);
  expect(job.timestamp + job.delay).toBeGreaterThanOrEqual(job.data.changedAt + RETENTION_SETTLE_MS);
  expect(answer.retentionRestampAt).toBe(new Date(job.data.changedAt + RETENTION_SETTLE_MS).toISOString());
  return job;
}

/** Runs `call` and says between which instants it ran. */
async function timed<T>(call: () => Promise<T>): Promise<[T, { after: number; before: number }]> {
  const after = Date.now();
  const out = await call();
  return [out, { after, before: Date.now() }];
}

describe('a change of historyMonths through the admin API', () => {
  it("with the store's admin key: schedules exactly one delayed restamp and says when; a PATCH that changes nothing of it, none", async () => {
    const created = await op('POST', '/v1/operator/stores', { store: 'RS_A', historyMonths: 6, adminKey: true });
    const admin = created.json().adminKey as string;
    expect(await pending('RS_A')).toEqual([]); // a new store has no items to restamp

    const [r, when] = await timed(() => patch('/v1/admin/store', admin, { historyMonths: 24 }));
    expect(r.statusCode).toBe(200);
    const body = updatedTenantSchema.parse(r.json());
    expect(body).toMatchObject({ store: 'RS_A', historyMonths: 24, retentionRestampAt: expect.any(String) });
    const job = await onlyJob('RS_A', body, when);

    // The same value again (a settings form that sends every field), or another setting: no change, no restamp.
    for (const payload of [{ historyMonths: 24 }, { currency: 'EUR' }, { timeZone: 'Europe/Paris', historyMonths: 24 }]) {
      const same = await patch('/v1/admin/store', admin, payload);
      expect(same.statusCode).toBe(200);
      expect(same.json().retentionRestampAt).toBeUndefined();
      expect((await pending('RS_A')).map((j) => j.id)).toEqual([job.id]);
    }
    // A refused change schedules none either.
    expect((await patch('/v1/admin/store', admin, { historyMonths: 0 })).statusCode).toBe(400);
    expect((await pending('RS_A')).map((j) => j.id)).toEqual([job.id]);
  });

  it('with the operator token: the same; a second change before the first restamp ran leaves one job, due after the second', async () => {
    expect((await op('POST', '/v1/operator/stores', { store: 'RS_B', historyMonths: 6 })).statusCode).toBe(201);
    const [first, firstAt] = await timed(() => op('PATCH', '/v1/operator/stores/RS_B', { historyMonths: 3 }));
    expect(first.statusCode).toBe(200);
    const firstJob = await onlyJob('RS_B', first.json(), firstAt);

    // Kept for ever now: the pending restamp is replaced by the one of this change (it applies the latest setting).
    const [second, secondAt] = await timed(() =>
      op('PATCH', '/v1/operator/stores/RS_B', { historyMonths: null, ingestEventsPerSecond: 10 }),
    );
    expect(second.json()).toMatchObject({ store: 'RS_B', ingestEventsPerSecond: 10 });
    expect(second.json().historyMonths).toBeUndefined();
    const secondJob = await onlyJob('RS_B', second.json(), secondAt);
    expect(secondJob.id).not.toBe(firstJob.id);
    expect(secondJob.data.changedAt).toBeGreaterThanOrEqual(firstJob.data.changedAt);
    // The budget alone: nothing scheduled. Another store's restamp is its own.
    expect((await op('PATCH', '/v1/operator/stores/RS_B', { ingestEventsPerSecond: 20 })).json().retentionRestampAt).toBeUndefined();
    expect((await pending('RS_B')).map((j) => j.id)).toEqual([secondJob.id]);
    expect(await pending('RS_A')).toHaveLength(1);
    // An unknown store: 404, nothing scheduled.
    expect((await op('PATCH', '/v1/operator/stores/RS_NOPE', { historyMonths: 3 })).statusCode).toBe(404);
    expect(await pending('RS_NOPE')).toEqual([]);
  });

  it('answers 503 without changing the setting when the restamp cannot be scheduled (Redis unreachable)', async () => {
    const dead = new Redis(`redis://127.0.0.1:${await freePort()}`, {
      maxRetriesPerRequest: 1,
      retryStrategy: () => null,
      lazyConnect: true,
    });
    dead.on('error', () => undefined);
    const deadQueues = createQueues(dead, { keyPrefix: 'rq', shards: 1 });
    for (const q of allQueues(deadQueues)) q.on('error', () => undefined);
    const offline = await f.app({ admin: adminDeps(deadQueues) });
    try {
      expect((await op('POST', '/v1/operator/stores', { store: 'RS_C', historyMonths: 6 })).statusCode).toBe(201);
      const r = await offline.inject({
        method: 'PATCH',
        url: '/v1/operator/stores/RS_C',
        headers: bearer(OPERATOR),
        payload: { historyMonths: 12 },
      });
      expect({ status: r.statusCode, code: r.json().code }).toEqual({ status: 503, code: 'TALLY_ERR_UNAVAILABLE' });
      expect((await getTenant(f.db, 'RS_C'))?.historyMonths).toBe(6);
      // Other settings do not need Redis.
      const budget = await offline.inject({
        method: 'PATCH',
        url: '/v1/operator/stores/RS_C',
        headers: bearer(OPERATOR),
        payload: { currency: 'EUR' },
      });
      expect(budget.statusCode).toBe(200);
    } finally {
      await closeQueues(deadQueues).catch(() => undefined);
      dead.disconnect();
    }
  });
});
