import { collectorEnv, loadConfig } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { createLogger } from '@tally/observability';
import { QUEUE, queueShards, shardOfStore } from '@tally/queues';
import { loadRules } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import { createTestTable, startDynalite, startRedis, waitFor, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type CollectorApp } from './app';
import { closeCollectorDeps, createCollectorDeps, type CollectorResources } from './deps';

// MAX_QUEUE_DEPTH is per events shard: one store's backlog in its shard refuses the stores of that shard only.
let redis: RedisHandle;
let dynalite: DynaliteHandle;
let res: CollectorResources;
let app: CollectorApp;
let inspect: Redis;
const key = { noisy: '', quiet: '' };
const NOISY = 'NOISY';
const QUIET = ['QUIET', 'QUIET1', 'QUIET2', 'QUIET3'].find((s) => shardOfStore(s, 2) !== shardOfStore(NOISY, 2))!;

beforeAll(async () => {
  [redis, dynalite] = await Promise.all([startRedis(), startDynalite()]);
  const table = await createTestTable(dynalite.endpoint);
  const dynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table });
  await admin.createTenant(NOISY);
  await admin.createTenant(QUIET);
  key.noisy = await admin.issueKey(NOISY, ['ingest'], 'noisy');
  key.quiet = await admin.issueKey(QUIET, ['ingest'], 'quiet');
  dynamo.destroy();
  inspect = new Redis(redis.url, { maxRetriesPerRequest: null });
  await inspect.set(redisKeys('t').rules, loadRules().fingerprint);
  const config = loadConfig(collectorEnv, {
    REDIS_URL: redis.url,
    DYNAMODB_ENDPOINT: dynalite.endpoint,
    DYNAMODB_TABLE: table,
    QUEUE_SHARDS: '2',
    MAX_QUEUE_DEPTH: '5',
  });
  res = createCollectorDeps(config, createLogger({ name: 'backpressure-test', level: 'silent' }), loadRules());
  app = await buildApp(res.deps);
  res.backpressure.start();
  await waitFor(() => res.redis.status === 'ready' && res.backpressure.depth !== undefined, { message: 'collector up' });
}, 60_000);
afterAll(async () => {
  await app?.close();
  if (res) await closeCollectorDeps(res);
  inspect?.disconnect();
  await Promise.all([redis?.stop(), dynalite?.stop()]);
});

const post = (k: string) =>
  app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${k}` },
    payload: JSON.stringify([{ type: 'view', ts: new Date(Date.now() - 60_000).toISOString(), dims: { product: 'P1' } }]),
  });

describe('backpressure with QUEUE_SHARDS=2', () => {
  it("refuses (429) the store whose shard is over MAX_QUEUE_DEPTH, and takes a store's events from the other shard", async () => {
    const shards = queueShards(res.queues, QUEUE.events);
    for (let i = 0; i < 6; i++) expect((await post(key.noisy)).statusCode).toBe(202);
    await res.backpressure.sample();
    const waiting = await Promise.all(shards.map((q) => q.getWaitingCount()));
    expect(waiting[shardOfStore(NOISY, 2)]).toBe(6);
    expect(waiting[shardOfStore(QUIET, 2)]).toBe(0);

    const noisy = await post(key.noisy);
    expect(noisy.statusCode).toBe(429);
    expect(noisy.json()).toMatchObject({ code: 'TALLY_ERR_BACKPRESSURE', depth: 6, limit: 5 });
    expect((await post(key.quiet)).statusCode).toBe(202);

    await Promise.all(shards.map((q) => q.drain()));
    await res.backpressure.sample();
    expect((await post(key.noisy)).statusCode).toBe(202);
  });
});
