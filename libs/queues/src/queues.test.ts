import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import {
  checkFlatDistinct,
  checkFlatRows,
  describeRedisTarget,
  dynamoWriteJobSchema,
  enqueue,
  enqueueBulk,
  eventsJobSchema,
  jobIdFor,
  maintenanceJobSchema,
  payloadSchemas,
  QUEUE,
  QUEUE_NAMES,
  QUEUE_SETTINGS,
  QUEUE_SHARDS,
  queuePrefix,
  scheduleRetentionRestamp,
  shardCount,
  shardOfStore,
  type TallyQueues,
} from './index';

describe('queues', () => {
  it('has settings and a schema for every queue', () => {
    expect(QUEUE_NAMES).toEqual(['events', 'seal', 'dynamo-writes', 'maintenance']);
    for (const q of QUEUE_NAMES) {
      expect(QUEUE_SETTINGS[q].jobs.attempts).toBeGreaterThan(0);
      expect(payloadSchemas[q]).toBeDefined();
    }
    expect(QUEUE_SETTINGS[QUEUE.dynamoWrites].jobs.removeOnFail).toMatchObject({ age: 14 * 86_400 });
  });

  it('validates payloads', () => {
    const good = { batchId: 'b1', store: 'S1', receivedAt: 1, events: [{ type: 'view', ts: 1, dims: { product: 'P1' } }] };
    expect(eventsJobSchema.parse(good).source).toBe('http');
    expect(eventsJobSchema.safeParse({ ...good, store: 'S{1}' }).success).toBe(false);
    expect(eventsJobSchema.safeParse({ ...good, events: [] }).success).toBe(false);
    expect(eventsJobSchema.safeParse({ ...good, events: [{ type: 'view', ts: 'x', dims: {} }] }).success).toBe(false);
    expect(dynamoWriteJobSchema.parse({ store: 'S1', pk: 'S1#product#P:1' })).toEqual({ store: 'S1', pk: 'S1#product#P:1' });
    // A flush job queued by an earlier version (with the old defaults) still parses.
    const queuedBefore = { store: 'S1', pk: 'S1', reason: 'policy', waits: 0 };
    expect(dynamoWriteJobSchema.parse(queuedBefore)).toEqual(queuedBefore);
  });

  it('validates maintenance jobs: a restamp of one store after one change, retried with backoff, dropped once done', () => {
    const job = { kind: 'restamp-retention', store: 'S1', changedAt: 1_700_000_000_000 };
    expect(maintenanceJobSchema.parse(job)).toEqual(job);
    for (const bad of [
      { ...job, kind: 'vacuum' },
      { ...job, store: 'S{1}' },
      { ...job, changedAt: 1.5 },
      { ...job, extra: 1 },
      { store: 'S1' },
    ])
      expect(maintenanceJobSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    const { jobs } = QUEUE_SETTINGS[QUEUE.maintenance];
    expect(jobs).toMatchObject({
      attempts: 12,
      backoff: { type: 'exponential' },
      removeOnComplete: true,
      removeOnFail: { age: 14 * 86_400 },
    });
    expect(shardCount({ keyPrefix: 't', shards: 8 }, QUEUE.maintenance)).toBe(1);
  });

  it('schedules a restamp delayed by the settle time, one job id per store and change, coalesced per store', async () => {
    const added: Array<{ name: string; data: unknown; opts: unknown }> = [];
    const queue = {
      add: async (name: string, data: unknown, opts: { jobId: string }) => (added.push({ name, data, opts }), { id: opts.jobId }),
    };
    const queues = { [QUEUE.maintenance]: queue } as unknown as Pick<TallyQueues, 'maintenance'>;
    const at = Date.now();
    expect(await scheduleRetentionRestamp(queues, 'S1', at, 90_000)).toBe(at + 90_000);
    await scheduleRetentionRestamp(queues, 'S1', at + 1, 90_000);
    await scheduleRetentionRestamp(queues, 'S2', at, 90_000);
    const dedupe = { id: jobIdFor('restamp', 'S1'), replace: true, keepLastIfActive: true };
    expect(added[0]).toEqual({
      name: QUEUE.maintenance,
      data: { kind: 'restamp-retention', store: 'S1', changedAt: at },
      opts: { jobId: jobIdFor('restamp', 'S1', at), delay: 90_000, deduplication: dedupe },
    });
    expect(added[1]!.opts).toEqual({ jobId: jobIdFor('restamp', 'S1', at + 1), delay: 90_000, deduplication: dedupe });
    expect(added[2]!.opts).toMatchObject({ deduplication: { id: jobIdFor('restamp', 'S2') } });
  });

  it("checks a rolled-up batch's distinct members whole: the store's rows, sketch fields, whole 8-byte ids, only with rows", () => {
    const ids = (n: number) => Buffer.alloc(8 * n, 7).toString('base64');
    const rolled = { batchId: 'b1', store: 'S1', receivedAt: 1, rows: ['S1', 1, '2026-068|v', 2], count: 2 };
    const distinct = ['S1', 1, '2026-068|uv', ids(2), 'S1#product#P1', 2, '2026-068|uv', ids(1), '2026-069|uv', ids(300)];
    expect(checkFlatDistinct('S1', distinct)).toEqual({ rows: 2 });
    expect(eventsJobSchema.safeParse({ ...rolled, distinct }).success).toBe(true);
    const problem = (d: unknown[]) => {
      const r = checkFlatDistinct('S1', d);
      return 'error' in r ? r.error : 'ok';
    };
    expect(problem([])).toBe('distinct: empty');
    expect(problem(['S2', 1, '2026-068|uv', ids(1)])).toBe('distinct.0: the row is not one of store S1');
    expect(problem(['S1x', 1, '2026-068|uv', ids(1)])).toBe('distinct.0: the row is not one of store S1');
    expect(problem(['S1', 2, '2026-068|uv', ids(1)])).toBe('distinct.1: not a field count of this payload');
    expect(problem(['S1', 1, 'uv', ids(1)])).toBe('distinct.2: not a sketch field (<day>|<metric>)');
    expect(problem(['S1', 1, '2026-068|uv', ''])).toBe('distinct.3: not base64 members');
    expect(problem(['S1', 1, '2026-068|uv', 'V1 not base64'])).toBe('distinct.3: not base64 members');
    expect(problem(['S1', 1, '2026-068|uv', Buffer.alloc(7).toString('base64')])).toBe('distinct.3: not whole 8-byte member ids');
    expect(problem(['S1', 1, '2026-068|uv', Buffer.alloc(9).toString('base64')])).toBe('distinct.3: not whole 8-byte member ids');
    expect(problem(['S1', 1, '2026-068|uv', 12])).toBe('distinct.3: not base64 members');
    const issues = (p: unknown) => eventsJobSchema.safeParse(p).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(issues({ ...rolled, distinct: ['S2', 1, '2026-068|uv', ids(1)] })).toEqual([
      'distinct: distinct.0: the row is not one of store S1',
    ]);
    const { rows: _rows, count: _count, ...bare } = rolled;
    expect(issues({ ...bare, events: [{ type: 'view', ts: 1, dims: {} }], distinct })).toEqual(['distinct: goes only with rows']);
  });

  it('refuses a rolled-up batch whole when a day key of its rows or distinct members is no day (the writer could never write it)', () => {
    const rolled = { batchId: 'b1', store: 'S1', receivedAt: 1, count: 2 };
    const rows = (day: string) => ['S1', 1, '2024-366|v', 1, 'S1#product#P1', 2, '2023-365|v', 1, `${day}|pv#P1`, 1];
    expect(checkFlatRows('S1', rows('2023-001'))).toEqual({ rows: 2 });
    expect(eventsJobSchema.safeParse({ ...rolled, rows: rows('2024-366') }).success).toBe(true);
    const problem = (day: string) => {
      const r = checkFlatRows('S1', rows(day));
      return 'error' in r ? r.error : 'ok';
    };
    expect(problem('2023-366')).toBe('rows.8: not a day: day of year 366 does not exist in 2023');
    expect(problem('2023-000')).toBe('rows.8: not a day: day of year 0 does not exist in 2023');
    expect(problem('2023-999')).toBe('rows.8: not a day: day of year 999 does not exist in 2023');
    const issues = (p: unknown) => eventsJobSchema.safeParse(p).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(issues({ ...rolled, rows: rows('2023-366') })).toEqual(['rows: rows.8: not a day: day of year 366 does not exist in 2023']);
    const ids = Buffer.alloc(8, 7).toString('base64');
    expect(checkFlatDistinct('S1', ['S1', 2, '2024-366|uv', ids, '2025-366|uv', ids])).toEqual({
      error: 'distinct.4: not a day: day of year 366 does not exist in 2025',
    });
    expect(issues({ ...rolled, rows: rows('2023-001'), distinct: ['S1', 1, '2023-000|uv', ids] })).toEqual([
      'distinct: distinct.2: not a day: day of year 0 does not exist in 2023',
    ]);
  });

  it('derives job ids without colons, deterministically', () => {
    const a = jobIdFor('flush', 'S1', 'S1#product#a:b', 123);
    expect(a).toBe(jobIdFor('flush', 'S1', 'S1#product#a:b', 123));
    expect(a).not.toBe(jobIdFor('flush', 'S1', 'S1#product#a:b', 124));
    expect(a).not.toContain(':');
    expect(jobIdFor('x', 'ab', 'c')).not.toBe(jobIdFor('x', 'a', 'bc'));
  });
});

describe('queue layout', () => {
  it('derives every BullMQ prefix from KEY_PREFIX as a hash tag, one per shard of the sharded queues', () => {
    const layout = { keyPrefix: 'shop', shards: 4 };
    expect(queuePrefix(layout, QUEUE.events, 3)).toBe('{shop:events:3}');
    expect(queuePrefix(layout, QUEUE.dynamoWrites, 0)).toBe('{shop:dynamo-writes:0}');
    expect(queuePrefix(layout, QUEUE.seal)).toBe('{shop:seal}');
    expect(queuePrefix({ keyPrefix: 't', shards: 1 }, QUEUE.events)).toBe('{t:events:0}');
    expect(() => queuePrefix(layout, QUEUE.events, 4)).toThrowError(/shard 4 of queue events does not exist \(QUEUE_SHARDS=4\)/);
    expect([shardCount(layout, QUEUE.events), shardCount(layout, QUEUE.dynamoWrites), shardCount(layout, QUEUE.seal)]).toEqual([4, 4, 1]);
  });

  it('puts a store in one stable shard and spreads stores over all shards', () => {
    expect(shardOfStore('STORE1', 1)).toBe(0);
    expect(shardOfStore('STORE1', 8)).toBe(shardOfStore('STORE1', 8));
    const hits = new Array(8).fill(0);
    for (let i = 0; i < 8_000; i++) hits[shardOfStore(`S${i}`, 8)]++;
    for (const h of hits) expect(h).toBeGreaterThan(800); // 1,000 each on average
  });

  it("enqueues each job on its store's shard", async () => {
    const added: Array<{ shard: number; ids: string[] }> = [];
    const fake = (shard: number) =>
      ({
        add: async (_: string, data: { store: string }, opts?: { jobId?: string }) => (
          added.push({ shard, ids: [opts?.jobId ?? data.store] }),
          { id: opts?.jobId }
        ),
        addBulk: async (jobs: Array<{ opts?: { jobId?: string } }>) => (
          added.push({ shard, ids: jobs.map((j) => j.opts!.jobId!) }),
          jobs.map((j) => ({ id: j.opts!.jobId }))
        ),
      }) as unknown as Queue;
    const shards = [fake(0), fake(1), fake(2)];
    const queues = { [QUEUE.dynamoWrites]: shards[0]!, [QUEUE_SHARDS]: { [QUEUE.dynamoWrites]: shards } } as unknown as TallyQueues;
    const stores = ['A', 'B', 'C', 'D', 'E', 'F'];
    const ids = await enqueueBulk(
      queues,
      QUEUE.dynamoWrites,
      stores.map((s) => ({ data: { store: s, pk: s }, opts: { jobId: `j-${s}` } })),
    );
    expect(ids).toEqual(stores.map((s) => `j-${s}`));
    for (const { shard, ids: jobIds } of added) for (const id of jobIds) expect([id, shard]).toEqual([id, shardOfStore(id.slice(2), 3)]);
    expect(added.flatMap((a) => a.ids).sort()).toEqual(stores.map((s) => `j-${s}`));
    expect(new Set(added.map((a) => a.shard)).size).toBeGreaterThan(1);
    added.length = 0;
    await enqueue(queues, QUEUE.dynamoWrites, { store: 'B', pk: 'B' }, { jobId: 'j-B' });
    expect(added).toEqual([{ shard: shardOfStore('B', 3), ids: ['j-B'] }]);
  });
});

describe('describeRedisTarget', () => {
  it('logs a Redis URL without its password: all before the last @, and the query (ioredis reads ?password=)', () => {
    expect(describeRedisTarget({ REDIS_URL: 'redis://:p@ss@redis:6379/0' })).toBe('redis://***@redis:6379/0');
    expect(describeRedisTarget({ REDIS_URL: 'rediss://u:pw@redis:6380/?password=Sup3rSecret' })).toBe('rediss://***@redis:6380/?***');
    expect(describeRedisTarget({ REDIS_URL: 'redis://127.0.0.1:6379' })).toBe('redis://127.0.0.1:6379');
  });
});
