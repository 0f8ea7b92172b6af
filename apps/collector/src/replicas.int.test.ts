import { collectorEnv, loadConfig } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { createLogger } from '@tally/observability';
import { closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { loadRules } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import {
  createTestTable,
  metricValue,
  startDynalite,
  startRedisWithReplica,
  testRedis,
  waitFor,
  type DynaliteHandle,
  type RedisWithReplica,
} from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type CollectorApp } from './app';
import { closeCollectorDeps, createCollectorDeps, type CollectorResources } from './deps';

// REDIS_WAIT_REPLICAS on the collector, against a real replica: a 202 only once the replica holds the batch, a 503
// when it does not, and a retry of that batch after a failover to the replica counted once.

let pair: RedisWithReplica;
let dynalite: DynaliteHandle;
let table: string;
let key: string;
let adminDynamo: ReturnType<typeof createDynamoClient>;
const started: Array<{ res: CollectorResources; app: CollectorApp }> = [];
const inspected: Array<{ redis: Redis; queues: TallyQueues }> = [];

async function startCollector(redisUrl: string, waitReplicas: number) {
  const config = loadConfig(collectorEnv, {
    REDIS_URL: redisUrl,
    DYNAMODB_ENDPOINT: dynalite.endpoint,
    DYNAMODB_TABLE: table,
    REDIS_WAIT_REPLICAS: String(waitReplicas),
    // The default: 200 ms was missed once by a replica that kept up, on a box busy with the whole suite.
    REDIS_WAIT_TIMEOUT_MS: '1000',
  });
  const res = createCollectorDeps(config, createLogger({ name: 'collector-test', level: 'silent' }), loadRules());
  const app = await buildApp(res.deps);
  res.backpressure.start();
  started.push({ res, app });
  await waitFor(() => res.redis.status === 'ready' && res.backpressure.depth !== undefined, { message: 'collector connected to redis' });
  return app;
}

/** The events queue of the Redis at `url`, to see which batches it holds. */
function queuesOf(url: string) {
  const redis = testRedis(url);
  const queues = createQueues(redis);
  for (const q of Object.values(queues)) q.on('error', () => {});
  inspected.push({ redis, queues });
  return queues.events;
}

beforeAll(async () => {
  [pair, dynalite] = await Promise.all([startRedisWithReplica(), startDynalite()]);
  table = await createTestTable(dynalite.endpoint);
  adminDynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo: adminDynamo, table });
  await admin.createTenant('SHOP1');
  key = await admin.issueKey('SHOP1', ['ingest'], 'web');
});
afterAll(async () => {
  for (const { app, res } of started) {
    await app.close();
    await closeCollectorDeps(res);
  }
  for (const i of inspected) {
    await closeQueues(i.queues);
    i.redis.disconnect();
  }
  adminDynamo?.destroy();
  await Promise.all([pair?.stop(), dynalite?.stop()]);
});

const views = (n: number) => Array.from({ length: n }, (_, i) => ({ type: 'view', ts: Date.now() - 60_000, dims: { product: `P${i}` } }));
const post = (app: CollectorApp, events: unknown[], idempotencyKey?: string) =>
  app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${key}`,
      ...(idempotencyKey !== undefined && { 'idempotency-key': idempotencyKey }),
    },
    payload: JSON.stringify(events),
  });

describe('the collector with REDIS_WAIT_REPLICAS=1', () => {
  it('answers 202 once a replica holds the batch, 503 when none does, and a retry after a failover counts it once', async () => {
    const app = await startCollector(pair.master.url, 1);
    const onMaster = queuesOf(pair.master.url);
    const onReplica = queuesOf(pair.replica.url);

    // The replica keeps up: 202, and the replica holds the job when the answer comes.
    const a = await post(app, views(2), 'a');
    expect(a.statusCode).toBe(202);
    expect(await onReplica.getJob(a.json().batchId)).toBeDefined();

    // The replica stops following (a broken link, or a lagging replica): the batch is on the master alone, and
    // the answer says so, with the same Idempotency-Key to retry with.
    const replica = new Redis(pair.replica.url);
    await replica.replicaof('NO', 'ONE');
    replica.disconnect();
    const batch = views(3);
    const b = await post(app, batch, 'b');
    expect([b.statusCode, b.headers['retry-after'], b.json().code]).toEqual([503, '5', 'TALLY_ERR_REDIS_REPLICAS_BEHIND']);
    // The detail says what to do, nothing of Redis' own (the wait's error, with its servers, goes to the log only).
    expect(b.json().detail).toBe(
      'too few Redis replicas confirmed that they hold the batch (REDIS_WAIT_REPLICAS): Redis holds the batch, but a failover now could lose it; retry later with the same Idempotency-Key, which counts it once either way',
    );
    const [batchB] = (await onMaster.getWaiting()).map((j) => j.id).filter((id) => id !== a.json().batchId);
    // A retry to the same master is the same job: still one.
    expect((await post(app, batch, 'b')).statusCode).toBe(503);
    expect(await onMaster.getWaitingCount()).toBe(2);
    expect(await onReplica.getWaitingCount()).toBe(1);
    // Without a key, the batch was given one, and the answer names it for the retry to carry: the retry is the same job.
    const batchC = views(1);
    const c = await post(app, batchC);
    expect(c.statusCode).toBe(503);
    const keyC = c.json().idempotencyKey as string;
    const [batchIdC] = (await onMaster.getWaiting()).map((j) => j.id).filter((id) => id !== a.json().batchId && id !== batchB);
    expect(keyC).toMatch(/^auto-[\w-]{22}$/);
    expect(c.json().detail).toMatch(
      new RegExp(
        `retry later with the header Idempotency-Key: ${keyC} \\(this request had none, so it was given one\\), which counts it once either way$`,
      ),
    );
    expect((await post(app, batchC, keyC)).statusCode).toBe(503);
    expect(await onMaster.getWaitingCount()).toBe(3);
    expect(
      metricValue((await app.inject({ method: 'GET', url: '/metrics' })).body, 'tally_events_rejected_total', { reason: 'replicas' }),
    ).toBe(8);

    // The master dies and the replica takes over, without b. The client's retry with the same key, to a collector
    // on the new master (which has no replica of its own yet), is accepted there, and b is there once.
    await pair.master.kill('SIGKILL');
    const promoted = await startCollector(pair.replica.url, 0);
    const retried = await post(promoted, batch, 'b');
    expect(retried.statusCode).toBe(202);
    expect(retried.json().batchId).toBe(batchB);
    expect(await post(promoted, batch, 'b').then((r) => r.statusCode)).toBe(202);
    expect(await onReplica.getWaitingCount()).toBe(2);
    // The keyless batch, retried under the key its answer named: there once too.
    const retriedC = await post(promoted, batchC, keyC);
    expect([retriedC.statusCode, retriedC.json().batchId]).toEqual([202, batchIdC]);
    expect(await post(promoted, batchC, keyC).then((r) => r.statusCode)).toBe(202);
    expect(await onReplica.getWaitingCount()).toBe(3);
  });
});
