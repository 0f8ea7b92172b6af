import { BucketEraser } from '@tally/buckets';
import { PROBLEM_SCHEMA } from '@tally/http';
import { closeQueues, createQueues, QUEUE, type TallyQueues } from '@tally/queues';
import { getTenant, RETENTION_CHANGE_INTERVAL_MS } from '@tally/tenants';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, useFixture } from '../test/fixture';
import type { QueryApiApp } from './app';

// Each change of a store's historyMonths schedules a restamp, a Scan of the whole table: a store's admin key may
// change it once per RETENTION_CHANGE_INTERVAL_MS (24 h), the operator as often as it likes. The admin routes' clock
// is injected.

const OPERATOR = 'op_'.padEnd(40, 'l');
const T = 1_780_000_000_000;
const HOUR = 3_600_000;
const f = useFixture();
const clock = { now: T };
let queues: TallyQueues;
let app: QueryApiApp;
let openapi: { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };

beforeAll(async () => {
  queues = createQueues(f.redis, { keyPrefix: 'rl', shards: 1 });
  app = await f.app({
    admin: {
      db: f.db,
      erasure: { eraser: new BucketEraser({ redis: f.redis, buckets: f.buckets }), queues: [], tombstoneSeconds: 60 },
      maintenance: queues,
      operatorToken: OPERATOR,
      now: () => clock.now,
    },
  });
  openapi = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
});
afterAll(async () => {
  await closeQueues(queues);
});

/** Creates a store keeping 6 months through the operator route; its admin key. */
const createStore = async (store: string) => {
  const payload = { store, historyMonths: 6, adminKey: true };
  return (await app.inject({ method: 'POST', url: '/v1/operator/stores', headers: bearer(OPERATOR), payload })).json().adminKey as string;
};
const patch = (url: string, key: string, payload: object) => app.inject({ method: 'PATCH', url, headers: bearer(key), payload });
const restampJobs = async (store: string) =>
  (await queues[QUEUE.maintenance].getJobs(['delayed', 'waiting', 'active', 'prioritized'])).filter((j) => j?.data?.store === store);

describe("a store admin's changes of historyMonths", () => {
  it('are one per 24 h: a second is 429 with Retry-After and a problem naming the limit, nothing changed or scheduled', async () => {
    const admin = await createStore('RL_A');
    clock.now = T;
    expect((await patch('/v1/admin/store', admin, { historyMonths: 12 })).statusCode).toBe(200);
    const [job] = await restampJobs('RL_A');
    expect(job).toBeDefined();

    // Back to 6 an hour later (the toggle that kept the table scanned): refused.
    clock.now = T + HOUR;
    const again = await patch('/v1/admin/store', admin, { historyMonths: 6, currency: 'EUR' });
    expect({ status: again.statusCode, type: again.headers['content-type'] }).toEqual({
      status: 429,
      type: 'application/problem+json; charset=utf-8',
    });
    expect(again.headers['retry-after']).toBe(String((RETENTION_CHANGE_INTERVAL_MS - HOUR) / 1000));
    const problem = PROBLEM_SCHEMA.parse(again.json());
    expect(problem).toMatchObject({ status: 429, code: 'TALLY_ERR_RATE_LIMITED', field: 'historyMonths' });
    expect(problem.detail).toMatch(/at most once every 24 h/);
    expect(problem.detail).toContain(new Date(T + RETENTION_CHANGE_INTERVAL_MS).toISOString());
    // Documented, with no member the document does not name.
    expect(Object.keys(openapi.paths['/v1/admin/store']!['patch']!.responses)).toContain('429');
    expect(Object.keys(again.json()).sort()).toEqual(['code', 'detail', 'field', 'status', 'title', 'type']);
    // All or nothing: the currency sent with it is not set either, and the only restamp is the first change's.
    const t = await getTenant(f.db, 'RL_A');
    expect({ historyMonths: t?.historyMonths, currency: t?.currency }).toEqual({ historyMonths: 12, currency: undefined });
    expect((await restampJobs('RL_A')).map((j) => j.id)).toEqual([job!.id]);

    // The value it has, and other settings, pass.
    expect((await patch('/v1/admin/store', admin, { historyMonths: 12, currency: 'EUR' })).statusCode).toBe(200);

    // A second before the day is over: Retry-After 1. Then it passes.
    clock.now = T + RETENTION_CHANGE_INTERVAL_MS - 1_000;
    expect((await patch('/v1/admin/store', admin, { historyMonths: 6 })).headers['retry-after']).toBe('1');
    clock.now = T + RETENTION_CHANGE_INTERVAL_MS;
    const later = await patch('/v1/admin/store', admin, { historyMonths: 6 });
    expect(later.statusCode).toBe(200);
    expect(later.json()).toMatchObject({ historyMonths: 6, retentionRestampAt: expect.any(String) });
  });

  it("leave the operator unlimited; its change starts the store admin's 24 h", async () => {
    const admin = await createStore('RL_B');
    clock.now = T;
    for (const historyMonths of [12, 6, 24]) {
      clock.now += 1_000;
      expect((await patch('/v1/operator/stores/RL_B', OPERATOR, { historyMonths })).statusCode).toBe(200);
    }
    const refused = await patch('/v1/admin/store', admin, { historyMonths: 3 });
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['retry-after']).toBe(String(RETENTION_CHANGE_INTERVAL_MS / 1000));
    expect((await getTenant(f.db, 'RL_B'))?.historyMonths).toBe(24);
  });
});
