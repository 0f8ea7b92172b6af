import { redisKeys } from '@tally/key-layout';
import { closeQueues, createQueues, QUEUE, queueFor, shardOfStore, type TallyQueues } from '@tally/queues';
import { startRedisCluster, type RedisClusterHandle } from '@tally/testing';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { createTallyClient, IdempotencyConflictError, type TallyClient } from './index';

// Idempotency records on a Redis Cluster with QUEUE_SHARDS=3: each in its store's slot (libs/key-layout
// `idempotency`), whatever QUEUE_SHARDS, not all on the first events shard's master; during the upgrade window (a
// marker on the first events shard: libs/intake legacy-records.ts) one an earlier version kept on that shard still
// honoured.

const SHARDS = 3;
const keys = redisKeys('t');
let cluster: RedisClusterHandle;
let inspect: Cluster;
let queues: TallyQueues;
let client: TallyClient;
/** A store whose slot is served by another master than the first events shard. */
let store: string;

const view = (product: string) => ({ type: 'view', ts: Date.now() - 60_000, dims: { product, visitor: 'V1' } });
/** Where earlier versions kept a record: the first events shard. */
const legacyRecord = (batchId: string) => queues.events.toKey(`idem:${batchId}`);
/** The upgrade window's marker (on the first events shard). */
const marker = () => queues.events.toKey('idem-legacy-until');
/** A record's lifetime under the default dedupe window, ms: two windows and the slack. */
const lifetimeMs = (2 * 86_400 + 8_640) * 1_000;
const clientOn = (queueShards: number) =>
  createTallyClient({
    connection: { REDIS_URL: `redis://${cluster.seeds[0]!.host}:${cluster.seeds[0]!.port}`, REDIS_CLUSTER_NODES: cluster.seeds },
    queueShards,
    backpressure: false,
  });

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 });
  inspect = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
  queues = createQueues(inspect, { keyPrefix: 't', shards: SHARDS });
  const firstMaster = await cluster.masterOf(queues.events.toKey('x'));
  for (let i = 0; store === undefined && i < 100; i++) {
    const candidate = `S${i}`;
    if ((await cluster.masterOf(keys.tag(candidate))) !== firstMaster) store = candidate;
  }
  if (store === undefined) throw new Error("every store's slot is on the first events shard's master");
}, 120_000);

beforeEach(async () => {
  // The upgrade window over (its marker's time passed), unless a test says otherwise; a client of its own for each
  // test: it reads the marker at its first keyed call.
  await inspect.set(marker(), String(Date.now() - 1));
  client = clientOn(SHARDS);
  return async () => {
    await client.close();
    await inspect.del(marker());
  };
});

afterAll(async () => {
  if (queues) await closeQueues(queues);
  inspect?.disconnect();
  await cluster?.stop();
});

it("binds a key in its store's slot, on that slot's master, not on the first events shard's", async () => {
  const events = [view('P1')];
  const { batchId } = await client.enqueueEvents(store, events, { idempotencyKey: 'order-1' });
  const jobs = queueFor(queues, QUEUE.events, store);
  expect(await jobs.getJob(batchId)).toBeDefined();
  const record = keys.idempotency(store, batchId);
  expect(await inspect.ttl(record)).toBeGreaterThan(lifetimeMs / 1_000 - 60);
  const master = await cluster.masterOf(record);
  expect(master).toBe(await cluster.masterOf(keys.tag(store)));
  expect(master).not.toBe(await cluster.masterOf(queues.events.toKey('failed')));
  // The first keyed call bound the legacy copy too (the marker had not answered yet); the next ones do not.
  const { batchId: next } = await client.enqueueEvents(store, [view('P9')], { idempotencyKey: 'order-1b' });
  expect([await inspect.exists(keys.idempotency(store, next)), await inspect.exists(legacyRecord(next))]).toEqual([1, 0]);
  // The record works there: the same events are the same batch, other events under the key are refused.
  expect((await client.enqueueEvents(store, events, { idempotencyKey: 'order-1' })).batchId).toBe(batchId);
  await expect(client.enqueueEvents(store, [view('P2')], { idempotencyKey: 'order-1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
  expect(await jobs.getWaitingCount()).toBe(2);
});

it('in the upgrade window, honours a record an earlier version kept on the first events shard: other events refused, the same its batch', async () => {
  const events = [view('P3')];
  const { batchId } = await client.enqueueEvents(store, events, { idempotencyKey: 'order-2' });
  const record = keys.idempotency(store, batchId);
  // As an earlier version kept it: on the first events shard alone (the same value, the same lifetime).
  const [value, ttl] = await Promise.all([inspect.get(record), inspect.ttl(record)]);
  await inspect.set(legacyRecord(batchId), value!, 'EX', ttl);
  await Promise.all([inspect.del(record), inspect.del(marker())]);
  await client.close();
  // The first client of this version on an installation an earlier one ran on: no marker yet.
  client = clientOn(SHARDS);
  const jobs = queueFor(queues, QUEUE.events, store);
  const waiting = await jobs.getWaitingCount();
  const before = Date.now();
  const err = await client.enqueueEvents(store, [view('P4')], { idempotencyKey: 'order-2' }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(IdempotencyConflictError);
  expect(err).toMatchObject({ code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT', idempotencyKey: 'order-2' });
  expect(await jobs.getWaitingCount()).toBe(waiting);
  // Not bound to the refused events in the store's slot; still bound to the earlier ones on the first shard.
  expect(await inspect.exists(record)).toBe(0);
  expect(await inspect.get(legacyRecord(batchId))).toBe(value);
  expect((await client.enqueueEvents(store, events, { idempotencyKey: 'order-2' })).batchId).toBe(batchId);
  expect(await jobs.getWaitingCount()).toBe(waiting);
  // The window: two record lifetimes from the client's first keyed call.
  expect(Number(await inspect.get(marker()))).toBeGreaterThanOrEqual(before + 2 * lifetimeMs);
  expect(Number(await inspect.get(marker()))).toBeLessThanOrEqual(Date.now() + 2 * lifetimeMs);
  // Meanwhile a key is bound in both places: an earlier version still running finds it on the first shard.
  const { batchId: next } = await client.enqueueEvents(store, [view('P8')], { idempotencyKey: 'order-2b' });
  expect([await inspect.exists(keys.idempotency(store, next)), await inspect.exists(legacyRecord(next))]).toEqual([1, 1]);
});

it('finds a record a client on another QUEUE_SHARDS bound (QUEUE_SHARDS lowered from 3 to 2)', async () => {
  const high = Array.from({ length: 100 }, (_, i) => `H${i}`).find((s) => shardOfStore(s, SHARDS) !== shardOfStore(s, SHARDS - 1))!;
  const events = [view('P5')];
  const { batchId } = await client.enqueueEvents(high, events, { idempotencyKey: 'order-3' });
  const lowered = clientOn(SHARDS - 1);
  try {
    const other = await lowered.enqueueEvents(high, [view('P6')], { idempotencyKey: 'order-3' }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(IdempotencyConflictError);
    // The same events: the same batch (queued on the store's shard under 2; the aggregator applies a batch id once).
    expect((await lowered.enqueueEvents(high, events, { idempotencyKey: 'order-3' })).batchId).toBe(batchId);
    // And the other way.
    const own = await lowered.enqueueEvents(high, [view('P7')], { idempotencyKey: 'order-4' });
    await expect(client.enqueueEvents(high, [view('P1')], { idempotencyKey: 'order-4' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(await inspect.exists(keys.idempotency(high, own.batchId))).toBe(1);
  } finally {
    await lowered.close();
  }
});
