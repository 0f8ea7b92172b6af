import { fileURLToPath } from 'node:url';
import { createDynamoClient } from '@tally/dynamo';
import { closeQueues, createQueues, leftoverShardQueues, QUEUE, queueFor, shardOfStore, type QueueName } from '@tally/queues';
import { createTenant } from '@tally/tenants';
import {
  appArgs,
  createTestTable,
  startDynalite,
  startProcess,
  startRedis,
  waitFor,
  type DynaliteHandle,
  type ProcessHandle,
  type RedisHandle,
} from '@tally/testing';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// main.ts's deletion of a store reaches the queue shards a lowered QUEUE_SHARDS left (the jobs there hold raw events).

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const OPERATOR = 'op_'.padEnd(40, 'x');
let redisServer: RedisHandle;
let redis: Redis;
let dynalite: DynaliteHandle;
let proc: ProcessHandle;
let base: string;
let store = 'LQ0';

/** A job of `store` failed on its shard of `queue` under QUEUE_SHARDS=`shards`. */
async function failedJob(queue: QueueName, shards: number, data: Record<string, unknown>) {
  const queues = createQueues(redis, { keyPrefix: 't', shards });
  const q = queueFor(queues, queue, store);
  const connection = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  const worker = new Worker(queue, () => Promise.reject(new Error('boom')), { connection, prefix: q.opts.prefix });
  const job = await q.add(queue, { store, ...data }, { attempts: 1 });
  await waitFor(async () => (await job.getState()) === 'failed');
  await worker.close();
  await connection.quit();
  await closeQueues(queues);
}

beforeAll(async () => {
  redisServer = await startRedis();
  redis = new Redis(redisServer.url);
  dynalite = await startDynalite();
  const table = await createTestTable(dynalite.endpoint);
  const client = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  for (let i = 1; shardOfStore(store, 4) === 0; i++) store = `LQ${i}`;
  await createTenant({ dynamo: client, table }, store);
  client.destroy();
  // Made under QUEUE_SHARDS=4, on the store's shard (not 0); the query API runs with QUEUE_SHARDS=1.
  await failedJob(QUEUE.events, 4, { events: [{ type: 'view', dims: { visitor: 'V-private' } }] });
  await failedJob(QUEUE.dynamoWrites, 4, { pk: `${store}#visitor#V-private` });

  proc = await startProcess(process.execPath, appArgs('query-api'), {
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
      ADMIN_OPERATOR_TOKEN: OPERATOR,
      KEY_PREFIX: 't',
      QUEUE_SHARDS: '1',
    },
  });
  const m = await proc.waitForLine(/"port":(\d+).*"msg":"query api listening"/, { timeoutMs: 30_000 });
  base = `http://127.0.0.1:${m[1]}`;
}, 90_000);

afterAll(async () => {
  await proc?.kill('SIGKILL');
  await redis?.quit();
  await dynalite?.stop();
  await redisServer?.stop();
});

describe('deleting a store through the query API process', () => {
  it('removes its failed jobs on the queue shards past QUEUE_SHARDS too', async () => {
    const res = await fetch(`${base}/v1/operator/stores/${store}`, { method: 'DELETE', headers: { authorization: `Bearer ${OPERATOR}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { removed: unknown }).removed).toMatchObject({ failedJobs: 2 });
    const queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
    for (const name of [QUEUE.events, QUEUE.dynamoWrites]) {
      const left = await leftoverShardQueues(queues, name);
      expect(await Promise.all(left.map((q) => q.getFailedCount()))).toEqual([]);
      await Promise.all(left.map((q) => q.close()));
    }
    await closeQueues(queues);
  });
});
