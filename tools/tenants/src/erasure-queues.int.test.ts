import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeQueues, createQueues, leftoverShardQueues, QUEUE, queueFor, shardOfStore, type QueueName } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import { createTenant, type TenantDb } from '@tally/tenants';
import { waitFor, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { tenantsProcess, useTenantDb } from './test-fixtures';

let dynalite: DynaliteHandle;
let db: TenantDb;
useTenantDb((tdb, d) => ([db, dynalite] = [tdb, d]));
let redis: Redis;
let server: RedisHandle;
useRedis((r, s) => void ([redis, server] = [r, s]));

/** A job of `store` failed on its shard of `queue` under QUEUE_SHARDS=`shards`. */
async function failedJob(queue: QueueName, store: string, shards: number, data: Record<string, unknown>) {
  const queues = createQueues(redis, { keyPrefix: 't', shards });
  const q = queueFor(queues, queue, store);
  const connection = new Redis(server.url, { maxRetriesPerRequest: null });
  const worker = new Worker(queue, () => Promise.reject(new Error('boom')), { connection, prefix: q.opts.prefix });
  const job = await q.add(queue, { store, ...data }, { attempts: 1 });
  await waitFor(async () => (await job.getState()) === 'failed');
  await worker.close();
  await connection.quit();
  await closeQueues(queues);
}

describe('tenants delete-store', () => {
  it('removes the failed jobs of the store on the queue shards a lowered QUEUE_SHARDS left', async () => {
    let store = 'LQ0';
    for (let i = 1; shardOfStore(store, 4) === 0; i++) store = `LQ${i}`;
    await createTenant(db, store);
    await failedJob(QUEUE.events, store, 4, { events: [{ type: 'view', dims: { visitor: 'V-private' } }] });
    await failedJob(QUEUE.dynamoWrites, store, 4, { pk: `${store}#visitor#V-private` });

    const env = {
      DYNAMODB_ENDPOINT: dynalite.endpoint,
      DYNAMODB_TABLE: db.table,
      REDIS_URL: server.url,
      KEY_PREFIX: 't',
      QUEUE_SHARDS: '1',
    };
    const p = await tenantsProcess(['delete-store', store], env);
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.output()).toContain('"failedJobs": 2');
    const queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
    for (const name of [QUEUE.events, QUEUE.dynamoWrites]) {
      const left = await leftoverShardQueues(queues, name);
      expect(await Promise.all(left.map((q) => q.getFailedCount()))).toEqual([]);
      await Promise.all(left.map((q) => q.close()));
    }
    await closeQueues(queues);
  });

  it("loads the rules quietly: their warnings (visitor data erasure cannot reach) are erase-visitor's, not delete-store's", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tally-tenants-rules-'));
    try {
      // The default rules and an entity keyed by the visitor and a product: not erasable, said at start.
      const rulesFile = join(dir, 'rules.json');
      const rules = {
        ...defaultRules,
        entities: { ...defaultRules.entities, basket: { key: ['visitor', 'product'], flush: { kind: 'bucket' } } },
        events: {
          ...defaultRules.events,
          view: {
            ...defaultRules.events.view,
            counters: [...defaultRules.events.view.counters, { entity: 'basket', metric: 'ViewCount' }],
          },
        },
      };
      writeFileSync(rulesFile, JSON.stringify(rules));
      await createTenant(db, 'QUIET1');
      const env = {
        DYNAMODB_ENDPOINT: dynalite.endpoint,
        DYNAMODB_TABLE: db.table,
        REDIS_URL: server.url,
        KEY_PREFIX: 't',
        RULES_FILE: rulesFile,
      };
      const warning =
        /^\[stderr\] tally: warning: rollup rules: entities\.basket: keyed by visitor and product .* not erased with the visitor/;
      const erase = await tenantsProcess(['erase-visitor', 'QUIET1', 'V1'], env);
      expect(await erase.exited).toEqual({ code: 1, signal: null }); // nothing of V1 was stored
      expect(
        erase
          .output()
          .split('\n')
          .filter((l) => warning.test(l)),
      ).toHaveLength(1);
      const del = await tenantsProcess(['delete-store', 'QUIET1'], env);
      expect(await del.exited).toEqual({ code: 0, signal: null });
      expect(del.output()).toMatch(/tally: deleted store QUIET1/);
      expect(del.output()).not.toMatch(/warning/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
