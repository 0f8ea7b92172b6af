import { fileURLToPath } from 'node:url';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, writeRow } from '@tally/dynamo';
import { loadRules, rollup, type NormalizedEvent } from '@tally/schema';
import { closeQueues, createQueues, leftoverShardQueues, QUEUE, queueFor, shardOfStore, type QueueName } from '@tally/queues';
import { createTenant, issueKey } from '@tally/tenants';
import {
  appArgs,
  createTestTable,
  startDynalite,
  startProcess,
  startRedis,
  type DynaliteHandle,
  type ProcessHandle,
  metricValue,
  type RedisHandle,
  waitFor,
} from '@tally/testing';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));

const METRICS_TOKEN = 'e2e-metrics-token-0123456789';
const OPERATOR = 'op_'.padEnd(40, 'x');
let redisServer: RedisHandle;
let dynalite: DynaliteHandle;
let proc: ProcessHandle;
let base: string;
let readKey: string;
let ingestKey: string;
let lowered = 'LQ0';

beforeAll(async () => {
  redisServer = await startRedis();
  dynalite = await startDynalite();
  const table = await createTestTable(dynalite.endpoint);
  const client = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  await createTenant({ dynamo: client, table }, 'E2E', { timeZone: 'Europe/Paris' });
  readKey = await issueKey({ dynamo: client, table }, 'E2E', ['read'], 'e2e read');
  ingestKey = await issueKey({ dynamo: client, table }, 'E2E', ['ingest'], 'e2e ingest');

  // Counts as the aggregator and writer leave them: some in DynamoDB, one view still in the open bucket.
  const redis = new Redis(redisServer.url);
  const rules = loadRules();
  const buckets = new BucketStore({ redis, rules, prefix: 't' });
  const now = Date.now();
  const ev = (type: string, dims: Record<string, string>, value?: string): NormalizedEvent => ({
    type,
    ts: now,
    dims,
    ...(value ? { value } : {}),
  });
  await buckets.registerStore('E2E');
  await buckets.apply(
    'E2E',
    'b1',
    rollup(rules, 'E2E', 'Europe/Paris', [
      ev('view', { product: 'P1', visitor: 'V1' }),
      ev('view', { product: 'P1', visitor: 'V1' }),
      ev('order', { visitor: 'V1' }, '12.34'),
    ]),
    { now, dedupeTtlSeconds: 60 },
  );
  await buckets.seal('E2E', { now: now + 1, minAgeMs: 0 });
  await buckets.foldSealed('E2E', { now: now + 2 });
  for (const { pk } of await buckets.dueRows('E2E', Number.MAX_SAFE_INTEGER)) {
    const out = await buckets.readOutbox('E2E', pk);
    await writeRow({ client, table, meter: createDynamoMeter() }, pk, out.entries);
    await buckets.ackOutbox(
      'E2E',
      pk,
      out.entries.map((e) => e.field),
      now + 3,
    );
  }
  await buckets.apply('E2E', 'b2', rollup(rules, 'E2E', 'Europe/Paris', [ev('view', { product: 'P1', visitor: 'V1' })]), {
    now: now + 4,
    dedupeTtlSeconds: 60,
  });
  // A store whose jobs failed on its shard under QUEUE_SHARDS=4 (not 0): the query API runs with 1, so that shard is
  // one a lowered QUEUE_SHARDS left (the jobs there hold raw events).
  for (let i = 1; shardOfStore(lowered, 4) === 0; i++) lowered = `LQ${i}`;
  await createTenant({ dynamo: client, table }, lowered);
  const failedJob = async (queue: QueueName, data: Record<string, unknown>) => {
    const queues = createQueues(redis, { keyPrefix: 't', shards: 4 });
    const q = queueFor(queues, queue, lowered);
    const connection = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    const worker = new Worker(queue, () => Promise.reject(new Error('boom')), { connection, prefix: q.opts.prefix });
    const job = await q.add(queue, { store: lowered, ...data }, { attempts: 1 });
    await waitFor(async () => (await job.getState()) === 'failed');
    await worker.close();
    await connection.quit();
    await closeQueues(queues);
  };
  await failedJob(QUEUE.events, { events: [{ type: 'view', dims: { visitor: 'V-private' } }] });
  await failedJob(QUEUE.dynamoWrites, { pk: `${lowered}#visitor#V-private` });
  await redis.quit();
  client.destroy();

  proc = await startProcess(process.execPath, appArgs('query-api', 'bundle'), {
    cwd: repoRoot,
    name: 'query-api',
    env: {
      REDIS_URL: redisServer.url,
      DYNAMODB_ENDPOINT: dynalite.endpoint,
      DYNAMODB_TABLE: table,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      LOG_LEVEL: 'info',
      DASHBOARD_DIR: '/nonexistent/tally-dashboard',
      METRICS_TOKEN,
      ADMIN_OPERATOR_TOKEN: OPERATOR,
    },
  });
  const m = await proc.waitForLine(/"port":(\d+).*"msg":"query api listening"/, { timeoutMs: 30_000 });
  base = `http://127.0.0.1:${m[1]}`;
}, 90_000);

afterAll(async () => {
  await proc?.kill('SIGKILL');
  await dynalite?.stop();
  await redisServer?.stop();
});

const get = async (path: string, key = readKey) => {
  const res = await fetch(base + path, { headers: { authorization: `Bearer ${key}` } });
  const body: any = (res.headers.get('content-type') ?? '').includes('json') ? await res.json() : await res.text();
  return { status: res.status, body, headers: res.headers };
};

describe('query-api as a process', () => {
  it("deletes a store's failed jobs on the queue shards past QUEUE_SHARDS too", async () => {
    const res = await fetch(`${base}/v1/operator/stores/${lowered}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${OPERATOR}` },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { removed: unknown }).removed).toMatchObject({ failedJobs: 2 });
    const redis = new Redis(redisServer.url);
    const queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
    for (const name of [QUEUE.events, QUEUE.dynamoWrites]) {
      const left = await leftoverShardQueues(queues, name);
      expect(await Promise.all(left.map((q) => q.getFailedCount()))).toEqual([]);
      await Promise.all(left.map((q) => q.close()));
    }
    await closeQueues(queues);
    await redis.quit();
  });

  it('answers series, totals, top and segments with DynamoDB plus Redis merged', async () => {
    const store = await get('/v1/store');
    expect(store).toMatchObject({ status: 200, body: { store: 'E2E', timeZone: 'Europe/Paris' } });

    const all = await get('/v1/series?metrics=ViewCount,OrderCount,Revenue&granularity=total');
    expect(all).toMatchObject({ status: 200, body: { totals: { ViewCount: 3, OrderCount: 1, Revenue: '12.34' }, dynamoRequests: 1 } });
    const week = await get('/v1/series?entity=product:P1&metrics=ViewCount&range=last7d');
    expect(week.body).toMatchObject({ totals: { ViewCount: 3 }, dynamoRequests: 1 });
    expect(week.body.points).toHaveLength(7);

    const totals = await get('/v1/totals?entity=product&ids=P1,P2&metrics=ViewCount&range=allTime');
    expect(totals.body.items).toEqual([
      { id: 'P1', values: { ViewCount: 3 } },
      { id: 'P2', values: { ViewCount: 0 } },
    ]);
    // A repeated id is answered once, where it is first asked.
    const repeated = await get('/v1/totals?entity=product&ids=P2,P1,P2&metrics=ViewCount&range=allTime');
    expect(repeated.body.items.map((i: { id: string }) => i.id)).toEqual(['P2', 'P1']);

    const top = await get('/v1/top?entity=product&metric=ViewCount&range=last7d&limit=5');
    expect(top.body.items).toEqual([{ id: 'P1', value: 3 }]);

    const seg = await fetch(`${base}/v1/segments/evaluate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${readKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        visitor: 'V1',
        segments: [{ name: 'fan', rules: [{ metric: 'ProductViews', key: 'P1', range: 'allTime', op: '>=', value: 3 }] }],
      }),
    });
    expect(await seg.json()).toMatchObject({
      visitor: 'V1',
      segments: [{ name: 'fan', matched: true, rules: [{ actual: 3, matched: true }] }],
      cache: 'miss',
    });
  });

  it('refuses bad input, keys without read scope and other stores', async () => {
    expect(await get('/v1/series?granularity=hour')).toMatchObject({ status: 400, body: { field: 'granularity' } });
    expect((await get('/v1/series', ingestKey)).status).toBe(403);
    expect((await get('/v1/series', 'tly_notakeynotakeynotakey')).status).toBe(401);
    expect((await get('/v1/series?store=OTHER')).status).toBe(404);
  });

  it('serves ops routes, metrics, docs and the not-built dashboard page', async () => {
    expect((await get('/healthz')).body).toEqual({ status: 'ok' });
    expect((await get('/readyz')).body).toEqual({ status: 'ready' });
    // METRICS_TOKEN is set: a read key is no credential for /metrics.
    const denied = await get('/metrics');
    expect([denied.status, denied.body.code]).toEqual([401, 'TALLY_ERR_UNAUTHORIZED']);
    const metrics = await get('/metrics', METRICS_TOKEN);
    expect(metrics.body).toContain('tally_http_request_duration_seconds_bucket{');
    expect(metrics.body).toContain('route="/v1/series"');
    expect(metrics.body).toMatch(/tally_dynamodb_requests_total\{operation="Query",outcome="ok",app="query-api"\} \d+/);
    expect(metrics.body).toContain('tally_segment_cache_total{result="miss",app="query-api"} 1');
    const docs = await get('/docs/json');
    expect(docs.body.paths['/v1/series']).toBeDefined();
    const home = await get('/');
    expect(home.status).toBe(200);
    expect(home.body).toContain('The dashboard is not built');
  });

  it('follows the sealers’ epochs: a query after a seal snapshots Redis once, with no stale retry', async () => {
    const redis = new Redis(redisServer.url);
    const monitor = await redis.monitor();
    try {
      const sealer = new BucketStore({ redis, rules: loadRules(), prefix: 't' });
      const path = '/v1/series?entity=product:P1&metrics=ViewCount&range=last7d';
      expect((await get(path)).body.totals).toEqual({ ViewCount: 3 }); // the query API knows the store's layout
      await waitFor(async () => ((await redis.pubsub('NUMSUB', 't:epochs')) as [string, number])[1] === 1, { message: 'the subscription' });
      const announcements = async () =>
        metricValue((await get('/metrics', METRICS_TOKEN)).body as string, 'tally_epoch_announcements_total');
      const heard = await announcements();
      // A sealer's tick: visit (seals the open bucket), fold, publish (announces the new open bucket's seq).
      const now = Date.now() + 10;
      const [v] = await sealer.visitMany(['E2E'], { now, minAgeMs: 0 });
      const [left] = await sealer.foldVisitedMany([{ store: 'E2E', seq: v!.sealed!, pks: v!.sealedRows! }], now);
      await sealer.publishBacklogs(0, [{ store: 'E2E', backlog: left!.backlog, epoch: v!.epoch }]);
      // The query API has taken the announcement in (its counter, raised after followEpochs' listener ran).
      await waitFor(async () => (await announcements()) > heard, { timeoutMs: 60_000, message: 'the epoch announcement' });
      let snapshots = 0;
      const [sealed, epoch] = [sealer.keys.sealed('E2E'), sealer.keys.epoch('E2E')];
      monitor.on('monitor', (_: string, args: string[]) => {
        if (args[0]?.toLowerCase() === 'evalsha' && args[3] === sealed && args[4] === epoch) snapshots++;
      });
      expect((await get(path)).body.totals).toEqual({ ViewCount: 3 });
      await redis.ping(); // every command of the query has been seen by the monitor
      expect(snapshots).toBe(1);
    } finally {
      monitor.disconnect();
      await redis.quit();
    }
  });

  it('shuts down on SIGTERM with exit code 0', async () => {
    const exit = await proc.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(proc.output()).toContain('shutdown complete');
  });
});
