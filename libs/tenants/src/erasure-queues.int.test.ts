import { BucketEraser, BucketStore } from '@tally/buckets';
import { createDynamoClient } from '@tally/dynamo';
import { compileRules, defaultRules } from '@tally/schema';
import { createTestTable, waitFor, type RedisHandle } from '@tally/testing';
import { useDynalite, useRedis } from '@tally/testing/vitest';
import { Queue, Worker, type Processor } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createTenant, deleteStore, eraseVisitor, type ErasureDeps, type TenantDb } from './index';

/*
 * The jobs of a store (or a visitor's row) on the queue shards past QUEUE_SHARDS that a lowered QUEUE_SHARDS left
 * (ErasureDeps.leftoverQueues, looked for at each call): removed and waited for as those of the other shards, and the
 * queues found closed after the call.
 */

const rules = compileRules(defaultRules);
let redis: Redis;
let server: RedisHandle;
let db: TenantDb;
useRedis((r, s) => void ([redis, server] = [r, s]), { flushEachTest: true });
useDynalite(async (d) => {
  db = { dynamo: createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' }), table: await createTestTable(d.endpoint) };
  return () => db.dynamo.destroy();
});

/** A queue on shard `shard` of `name` (layout `t`), on a connection of its own. */
const shardQueue = (name: string, shard: number) => new Queue(name, { connection: redis, prefix: `{t:${name}:${shard}}` });

/** Runs the jobs of `queue` with `processor` until `until` holds; returns the worker's close. */
async function work(queue: Queue, processor: Processor, until: () => Promise<boolean>) {
  const connection = new Redis(server.url, { maxRetriesPerRequest: null });
  const worker = new Worker(queue.name, processor, { connection, prefix: queue.opts.prefix });
  await waitFor(until);
  return async () => {
    await worker.close(true);
    await connection.quit();
  };
}

/** The deps of a call; `leftoverQueues` gives new queues on the shards `leftover` names, kept in `opened`. */
function depsOf(leftover: Array<[string, number]>) {
  const opened: Queue[] = [];
  const deps: ErasureDeps & { rules: typeof rules } = {
    db,
    eraser: new BucketEraser({ redis, buckets: new BucketStore({ redis, rules, prefix: 't' }) }),
    queues: [shardQueue('events', 0), shardQueue('dynamo-writes', 0)],
    leftoverQueues: async () => {
      const found = leftover.map(([name, shard]) => shardQueue(name, shard));
      opened.push(...found);
      return found;
    },
    tombstoneSeconds: 60,
    activeJobsTimeoutMs: 300,
    rules,
  };
  return { deps, opened };
}

describe('erasure and the queue shards past QUEUE_SHARDS', () => {
  it("deleting a store removes its queued and failed jobs there (events and dynamo-writes), others' stay; the queues are closed", async () => {
    await createTenant(db, 'LQ1');
    const events = shardQueue('events', 2);
    const writes = shardQueue('dynamo-writes', 3);
    const batch = { store: 'LQ1', events: [{ type: 'view', dims: { visitor: 'V-private' } }] };
    await events.add('events', batch, { jobId: 'b1', attempts: 1 });
    const stop = await work(
      events,
      () => Promise.reject(new Error('boom')),
      async () => (await events.getJobState('b1')) === 'failed',
    );
    await stop();
    await events.add('events', { ...batch, store: 'OTHER' }, { jobId: 'b2', delay: 60_000 });
    await writes.add('flush', { store: 'LQ1', pk: 'LQ1#visitor#V-private' }, { jobId: 'f1', delay: 60_000 });

    const { deps, opened } = depsOf([
      ['events', 2],
      ['dynamo-writes', 3],
    ]);
    const r = await deleteStore(deps, 'LQ1');
    expect(r.removed).toMatchObject({ failedJobs: 1, queuedJobs: 1 });
    expect([await events.getJobState('b1'), await writes.getJobState('f1'), await events.getJobState('b2')]).toEqual([
      'unknown',
      'unknown',
      'delayed',
    ]);
    expect(opened.map((q) => q.closing !== undefined)).toEqual([true, true]);
    await Promise.all([...deps.queues, events, writes].map((q) => q.close()));
  });

  it('erasing a visitor waits for a flush of their row running there (not done in time: incomplete); the queues are closed', async () => {
    await createTenant(db, 'LQ2');
    const pk = rules.pkOf('LQ2', 'visitor', ['V1']);
    const writes = shardQueue('dynamo-writes', 5);
    await writes.add('flush', { store: 'LQ2', pk }, { jobId: 'f2' });
    let release = () => {};
    const running = new Promise<void>((resolve) => (release = resolve));
    const stop = await work(
      writes,
      () => running,
      async () => (await writes.getJobState('f2')) === 'active',
    );

    const { deps, opened } = depsOf([['dynamo-writes', 5]]);
    await expect(eraseVisitor(deps, 'LQ2', 'V1')).rejects.toMatchObject({ code: 'TALLY_ERR_DELETION_INCOMPLETE' });
    expect(opened.map((q) => q.closing !== undefined)).toEqual([true]);
    release();
    await stop();
    await Promise.all([...deps.queues, writes].map((q) => q.close()));
  });
});
