import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, getItem } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { compileRules, defaultRules, rollup } from '@tally/schema';
import { createRedisConnection, createReplicaFence, ReplicasBehindError, storeFence, type StoreFence } from '@tally/queues';
import { createTestTable, startRedisCluster, waitFor, type DynaliteHandle, type RedisHandle, type RedisWithReplica } from '@tally/testing';
import { useDynalite, useRedisWithReplica } from '@tally/testing/vitest';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DelayedError, type Job } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { createWriterMetrics, flushProcessor } from './flush.processor';

// REDIS_WAIT_REPLICAS against a real replica: a master, a replica of it, and a failover to the replica while the
// master had a seal the replica never got.

// Every row flushed after every bucket.
const rules = compileRules({
  ...defaultRules,
  entities: Object.fromEntries(Object.entries(defaultRules.entities).map(([name, e]) => [name, { ...e, flush: { kind: 'bucket' } }])),
});
const STORE = 'S';
let pair: RedisWithReplica;
let master: RedisHandle;
let dyn: DynaliteHandle;
let client: DynamoDBClient;
const { connect, disconnectAfter } = useRedisWithReplica((p) => {
  pair = p;
  master = p.master;
});
useDynalite((d) => {
  dyn = d;
  client = createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1', maxAttempts: 1 });
  return () => client.destroy();
});

/** `views` views of the store applied as batch `id` into its open bucket. */
async function apply(buckets: BucketStore, id: string, views: number, now: number) {
  const events = Array.from({ length: views }, () => ({ type: 'view', ts: Date.parse('2023-05-03T10:00:00Z'), dims: {} }));
  await buckets.apply(STORE, id, rollup(rules, STORE, 'UTC', events), { now, dedupeTtlSeconds: 3600 });
}

/** Seals and folds the open bucket, then runs one flush of the store row as the writer's processor does. */
async function sealAndFlush({ buckets, table }: { buckets: BucketStore; table: string }, now: number, replicated?: StoreFence) {
  await buckets.seal(STORE, { now, minAgeMs: 0 });
  await buckets.foldSealed(STORE, { now });
  const metrics = createWriterMetrics(new Registry());
  // As much of a BullMQ job as the processor uses; a wait moves it to the delayed set (here: nowhere) and throws DelayedError.
  const job = { id: 'j', data: { store: STORE, pk: STORE }, attemptsStarted: 1, moveToDelayed: async () => {} };
  const run = flushProcessor({
    buckets,
    dynamo: { client, table, meter: createDynamoMeter() },
    metrics,
    log: pino({ level: 'silent' }),
    maxBackoffMs: 200,
    replicated,
  });
  const outcome = await run(job as unknown as Job).then(
    () => 'written' as const,
    (err: unknown) => (err instanceof DelayedError ? ('delayed' as const) : Promise.reject(err)),
  );
  const waits = (await metrics.waits.get()).values;
  expect(waits.every((w) => w.value === 0 || w.labels['reason'] === 'replicas')).toBe(true);
  return { outcome, waits: waits.reduce((sum, w) => sum + w.value, 0) };
}

const total = async (table: string) => (await getItem({ client, table, meter: createDynamoMeter() }, STORE, 'TOTAL'))?.attrs.get('v');

describe('the writer with REDIS_WAIT_REPLICAS=1', () => {
  it('waits when its Redis connection closed after it read the outbox (a failover may have moved the connection)', async () => {
    // A connection that reconnects when the server cuts it, as the writer's does.
    const m = disconnectAfter(createRedisConnection({ REDIS_URL: master.url }) as Redis);
    m.on('error', () => {});
    const i = { buckets: new BucketStore({ redis: m, rules, prefix: 'rk' }), table: await createTestTable(dyn.endpoint) };
    const fence = storeFence(createReplicaFence(connect(master.url), 1, 1_000, [m]), redisKeys('rk'), 'the outbox');
    await i.buckets.registerStore(STORE);
    await apply(i.buckets, 'k0', 2, 1_000);
    // Right after the read, the server cuts the connection (as a failover behind one address does); it reconnects.
    const read = i.buckets.readOutbox.bind(i.buckets);
    vi.spyOn(i.buckets, 'readOutbox').mockImplementationOnce(async (...args) => {
      const outbox = await read(...args);
      const closed = new Promise((resolve) => m.once('close', resolve));
      await connect(master.url).client('KILL', 'ID', String(await m.client('ID')));
      await closed;
      return outbox;
    });
    // The replica holds the outbox, but what the flush read could have come from another server: it waits.
    expect(await sealAndFlush(i, 2_000, fence)).toEqual({ outcome: 'delayed', waits: 1 });
    expect(await total(i.table)).toBeUndefined();
    expect(await sealAndFlush(i, 2_000, fence)).toEqual({ outcome: 'written', waits: 0 });
    expect(await total(i.table)).toBe(2n);
  });

  it('writes nothing a replica lacks, so a failover to it keeps DynamoDB and Redis counting the same', async () => {
    // Two installations on the same Redis (key prefixes), each with its table and the same traffic: one writer
    // waits for the replica, the other (the control) does not.
    const m = connect(master.url);
    const fenced = { buckets: new BucketStore({ redis: m, rules, prefix: 'rf' }), table: await createTestTable(dyn.endpoint) };
    const control = { buckets: new BucketStore({ redis: m, rules, prefix: 'rc' }), table: await createTestTable(dyn.endpoint) };
    const fence = storeFence(createReplicaFence(connect(master.url), 1, 300, [m]), redisKeys('rf'), 'the outbox');
    const both = async (step: (i: typeof fenced) => Promise<unknown>) => [await step(fenced), await step(control)];

    // The replica keeps up: the fenced flush waits for it and writes.
    await both((i) => i.buckets.registerStore(STORE));
    await both((i) => apply(i.buckets, 'b0', 1, 1_000));
    expect(await sealAndFlush(fenced, 2_000, fence)).toEqual({ outcome: 'written', waits: 0 });
    expect(await sealAndFlush(control, 2_000)).toEqual({ outcome: 'written', waits: 0 });
    expect(await both((i) => total(i.table))).toEqual([1n, 1n]);

    // b1 reaches the replica; then the replica stops following (as one whose link broke, or that lags), and b2 and
    // the seal of their bucket reach only the master. (A frozen replica would not do: what the master had sent
    // waits in its socket and is applied when it thaws.)
    await both((i) => apply(i.buckets, 'b1', 3, 3_000));
    await waitFor(async () => (await m.wait(1, 100)) === 1, { message: 'b1 on the replica' });
    const promoted = connect(pair.replica.url);
    await promoted.replicaof('NO', 'ONE');
    await both((i) => apply(i.buckets, 'b2', 5, 4_000));
    expect(await sealAndFlush(fenced, 5_000, fence)).toEqual({ outcome: 'delayed', waits: 1 });
    expect(await sealAndFlush(control, 5_000)).toEqual({ outcome: 'written', waits: 0 });
    expect(await both((i) => total(i.table))).toEqual([1n, 9n]);

    // The master dies and the replica takes over. It has b1 in a bucket still open and never saw b2 (a write
    // acknowledged by the master and not yet replicated: asynchronous replication's loss). New views (b3) land in
    // that same bucket, which is sealed and flushed from the new master (no replica of its own yet).
    await master.kill('SIGKILL');
    const after = (i: typeof fenced) => ({
      ...i,
      buckets: new BucketStore({ redis: promoted, rules, prefix: i === fenced ? 'rf' : 'rc' }),
    });
    await both((i) => apply(after(i).buckets, 'b3', 2, 6_000));
    expect(await sealAndFlush(after(fenced), 7_000)).toEqual({ outcome: 'written', waits: 0 });
    expect(await sealAndFlush(after(control), 7_000)).toEqual({ outcome: 'written', waits: 0 });

    // Fenced: b0 + b1 + b3, every view the surviving Redis holds. Control: DynamoDB already had that bucket's seq
    // from the dead master, so the new master's seal of it is skipped by the watermark, and b3's views, acknowledged
    // by the new master and kept by it, never count.
    expect(await both((i) => total(i.table))).toEqual([6n, 9n]);
  });

  it("on a Redis Cluster sends the fence and its WAIT to the store's master, in one pipeline", async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const c = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
    try {
      // Stores on each of the three masters (slots 6373, 10374, 14503, 2112): no replica anywhere, so a wait for none
      // passes and a wait for one cannot.
      for (const store of ['A', 'B', 'C', 'D']) {
        const none = createReplicaFence(c, 0, 100, []);
        await storeFence(none, redisKeys('rf'), 'the outbox').wait(store, none.mark());
        const one = createReplicaFence(c, 1, 100, []);
        await expect(storeFence(one, redisKeys('rf'), 'the outbox').wait(store, one.mark())).rejects.toThrowError(
          new ReplicasBehindError('0 of 1 Redis replicas acknowledged the outbox within 100 ms'),
        );
        expect(await c.pttl(redisKeys('rf').fence(store))).toBeGreaterThan(0);
      }
    } finally {
      c.disconnect();
      await cluster.stop();
    }
  });
});
