import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, getItem, type DynamoMeter } from '@tally/dynamo';
import { closeQueues, createQueues, enqueue, jobIdFor, QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, rollup, type CompiledRules } from '@tally/schema';
import { visitorExpiry } from '@tally/tenants';
import { EXPIRES_ATTR } from '@tally/key-layout';
import { createTestTable, startDynalite, startRedis, waitForQueuesIdle, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { Worker } from 'bullmq';
import { Redis, ReplyError } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWriterMetrics, flushProcessor, type FlushDeps } from './flush.processor';

let server: RedisHandle;
let dyn: DynaliteHandle;
let redis: Redis;
let client: DynamoDBClient;
let queues: TallyQueues;
const log = pino({ level: 'silent' });
// Every row flushed after every bucket: the most writes, the hardest case for exactly-once. A second entity keyed by
// the visitor alone (shopper), whose rows are the visitor's as much as the visitor entity's (erased, expired).
const rules: CompiledRules = compileRules({
  ...defaultRules,
  entities: {
    store: { key: [], flush: { kind: 'bucket' } },
    product: { key: ['product'], flush: { kind: 'bucket' } },
    visitor: { key: ['visitor'], flush: { kind: 'bucket' } },
    page: { key: ['page'], flush: { kind: 'bucket' }, rank: true },
    shopper: { key: ['visitor'], flush: { kind: 'bucket' } },
  },
  events: {
    ...defaultRules.events,
    view: { ...defaultRules.events.view, counters: [...defaultRules.events.view.counters, { entity: 'shopper', metric: 'ViewCount' }] },
  },
});

beforeAll(async () => {
  server = await startRedis();
  dyn = await startDynalite({ path: mkdtempSync(join(tmpdir(), 'tally-dyn-')) });
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  // No retries inside the SDK: the writer's own backoff is under test. A stopped dynalite refuses connections at once,
  // so the request timeout only matters for a slow answer; it is generous because an UpdateItem that dynalite
  // applies but answers after the timeout (a loaded machine) is retried by the writer and then refused by the
  // watermark: counted right, but as a condition failure rather than the one UpdateItem per item asserted below.
  client = createDynamoClient({ endpoint: dyn.endpoint, region: 'us-east-1', maxAttempts: 1, requestTimeoutMs: 15_000 });
  queues = createQueues(redis);
});
afterAll(async () => {
  await closeQueues(queues);
  await redis.quit();
  client.destroy();
  await dyn.stop();
  await server.stop();
});

function setup(
  table: string,
  prefix: string,
  dynamo: DynamoDBClient = client,
  expiryOf?: FlushDeps['expiryOf'],
  wrap: (buckets: BucketStore) => BucketStore = (b) => b,
) {
  const buckets = new BucketStore({ redis, rules, prefix });
  const meter = createDynamoMeter();
  const metrics = createWriterMetrics(new Registry());
  const worker = new Worker(
    QUEUE.dynamoWrites,
    flushProcessor({ buckets: wrap(buckets), dynamo: { client: dynamo, table, meter }, metrics, log, maxBackoffMs: 300, expiryOf }),
    {
      connection: redis.duplicate(),
      prefix: queues[QUEUE.dynamoWrites].opts.prefix,
      concurrency: 4,
    },
  );
  return { buckets, meter, metrics, worker };
}

/** Applies one bucket of views for `products` products, seals and folds it, and schedules due flushes. */
async function bucket(buckets: BucketStore, store: string, n: number, now: number, products: number) {
  const events = Array.from({ length: products }, (_, p) => ({
    type: 'view',
    ts: Date.parse('2023-05-03T10:00:00Z'),
    dims: { product: `P${p}` },
  }));
  await buckets.registerStore(store);
  await buckets.apply(store, `b${n}`, rollup(rules, store, 'UTC', events), { now, dedupeTtlSeconds: 3600 });
  await buckets.seal(store, { now: now + 1000, minAgeMs: 0 });
  await buckets.foldSealed(store, { now: now + 1000 });
  for (const r of await buckets.dueRows(store, now + 1000)) {
    await enqueue(queues, QUEUE.dynamoWrites, { store, pk: r.pk }, { jobId: jobIdFor('flush', store, r.pk, r.firstDirty) });
  }
}

const updates = (m: DynamoMeter) => m.totals().requests['UpdateItem:ok'] ?? 0;
const waitsFor = async (metrics: ReturnType<typeof createWriterMetrics>, reason: string) =>
  (await metrics.waits.get()).values.find((v) => v.labels['reason'] === reason)?.value ?? 0;

/** One view of product P1 for store S applied, sealed and folded, and the due rows' flush jobs enqueued. */
async function oneView(buckets: BucketStore, now: number) {
  const view = { type: 'view', ts: Date.parse('2023-05-03T10:00:00Z'), dims: { product: 'P1' } };
  await buckets.registerStore('S');
  await buckets.apply('S', `v${now}`, rollup(rules, 'S', 'UTC', [view]), { now, dedupeTtlSeconds: 3600 });
  await buckets.seal('S', { now: now + 1000, minAgeMs: 0 });
  await buckets.foldSealed('S', { now: now + 1000 });
  const rows = await buckets.dueRows('S', now + 1000);
  for (const r of rows)
    await enqueue(queues, QUEUE.dynamoWrites, { store: 'S', pk: r.pk }, { jobId: jobIdFor('flush', 'S', r.pk, r.firstDirty) });
  return rows.length;
}

describe('dynamo writer', () => {
  it('drains a DynamoDB outage of many buckets with one UpdateItem per item', async () => {
    const table = await createTestTable(dyn.endpoint);
    const { buckets, meter, worker } = setup(table, 'out');
    await dyn.stop();
    const buckets_k = 6;
    for (let n = 0; n < buckets_k; n++) await bucket(buckets, 'S', n, 1_000_000 + n * 2000, 5);
    // The flush jobs wait (delayed), they do not fail.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
    expect(updates(meter)).toBe(0);
    await dyn.restart();
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    // 6 rows (store + 5 products), each with a month item and a TOTAL item: 12 items, 12 writes, not 12 x 6.
    expect(updates(meter), JSON.stringify(meter.totals().requests)).toBe(12);
    const total = await getItem({ client, table, meter }, 'S', 'TOTAL');
    expect(total!.attrs.get('v')).toBe(BigInt(5 * buckets_k));
    const p3 = await getItem({ client, table, meter }, 'S#product#P3', 'M2023-05');
    expect(Object.fromEntries(p3!.attrs)).toEqual({ 'D123.v': 6n, 'M05.v': 6n });
    expect(await redis.keys('out:{S}:o:*')).toEqual([]);
    expect(await redis.zcard('out:{S}:dirty')).toBe(0);
  });

  it("waits while a visitor row's tenant cannot be looked up, then writes the row (and the shopper row) with its retention stamp", async () => {
    const table = await createTestTable(dyn.endpoint);
    // Written with the stamp it has, the first item after an erasure would keep the tombstone's 30-day stamp.
    let lookupFails = true;
    const tenant = async (store: string) => {
      if (lookupFails) throw new Error('DynamoDB down');
      return { store, timeZone: 'UTC', historyMonths: 6 };
    };
    const now = Date.parse('2023-05-03T12:00:00Z');
    const { buckets, meter, metrics, worker } = setup(
      table,
      'ret',
      client,
      visitorExpiry({ tenant }, rules, () => now),
    );
    const view = { type: 'view', ts: Date.parse('2023-05-03T10:00:00Z'), dims: { product: 'P1', visitor: 'V1' } };
    await buckets.registerStore('S');
    await buckets.apply('S', 'r1', rollup(rules, 'S', 'UTC', [view]), { now, dedupeTtlSeconds: 3600 });
    await buckets.seal('S', { now: now + 1000, minAgeMs: 0 });
    await buckets.foldSealed('S', { now: now + 1000 });
    for (const r of await buckets.dueRows('S', now + 1000))
      await enqueue(queues, QUEUE.dynamoWrites, { store: 'S', pk: r.pk }, { jobId: jobIdFor('flush', 'S', r.pk, r.firstDirty) });
    const waited = async () => (await metrics.waits.get()).values.find((v) => v.labels['reason'] === 'dynamodb')?.value ?? 0;
    for (let i = 0; i < 100 && (await waited()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await waited()).toBeGreaterThan(0);
    expect(await getItem({ client, table, meter }, 'S#visitor#V1', 'M2023-05')).toBeUndefined();
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
    lookupFails = false;
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    const item = async (pk: string) =>
      (await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: 'M2023-05' } }, ConsistentRead: true })))
        .Item;
    const Item = await item('S#visitor#V1');
    expect(Item?.['D123.v']).toEqual({ N: '1' });
    // Six months of history from May 2023: the stamp is set, and past the end of that time.
    expect(Number(Item?.[EXPIRES_ATTR]?.N)).toBeGreaterThan(Date.parse('2023-11-01T00:00:00Z') / 1000);
    // The shopper row is keyed by the visitor alone too: the same stamp, not none (kept past the store's limit).
    const shopper = await item('S#shopper#V1');
    expect({ views: shopper?.['D123.v'], expiresAt: shopper?.[EXPIRES_ATTR] }).toEqual({
      views: { N: '1' },
      expiresAt: Item?.[EXPIRES_ATTR],
    });
  });

  it('waits while DynamoDB refuses the credentials, permissions or table, then writes every row once', async () => {
    const table = await createTestTable(dyn.endpoint);
    // Keys rotating, an IAM rollout, a table restore: 4xx answers that refuse the caller, not the request.
    const refusals = ['ExpiredTokenException', 'AccessDeniedException', 'UnrecognizedClientException', 'ResourceNotFoundException'];
    let refused = 0;
    const flaky = {
      send: (cmd: unknown) =>
        refused < 8
          ? Promise.reject(
              Object.assign(new Error('The security token included in the request is expired'), {
                name: refusals[refused++ % refusals.length],
                $metadata: { httpStatusCode: 400 },
              }),
            )
          : client.send(cmd as never),
    } as unknown as DynamoDBClient;
    const { buckets, meter, metrics, worker } = setup(table, 'auth', flaky);
    const failedAttempts: string[] = [];
    worker.on('failed', (job, err) => failedAttempts.push(`${job?.id}: ${err.message}`));
    const rows = await oneView(buckets, Date.parse('2023-05-03T12:00:00Z'));
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    expect(refused).toBe(8);
    expect(failedAttempts).toEqual([]);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
    expect(await waitsFor(metrics, 'dynamodb')).toBe(8);
    expect(meter.totals().requests['UpdateItem:client_error']).toBe(8);
    // store and P1 rows, each a month item and TOTAL: written once each.
    expect(rows).toBe(2);
    expect(updates(meter)).toBe(4);
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('v')).toBe(1n);
    expect((await getItem({ client, table, meter }, 'S#product#P1', 'TOTAL'))!.attrs.get('v')).toBe(1n);
    expect(await redis.keys('auth:{S}:o:*')).toEqual([]);
  });

  it('waits while Redis does not answer the flush (closed, loading, out of retries), then writes every row once', async () => {
    const table = await createTestTable(dyn.endpoint);
    // Each of the flush's Redis steps fails once: the outbox read, the sketches' read, the sketches' ack (after the
    // UpdateItems) and the outbox ack.
    const faults = new Map<string, Error>([
      ['readOutbox', new Error('Connection is closed.')],
      ['sketches.read', new ReplyError('LOADING Redis is loading the dataset in memory')],
      ['sketches.ack', new ReplyError('CLUSTERDOWN The cluster is down')],
      [
        'ackOutbox',
        Object.assign(new Error('Reached the max retries per request limit (which is 20).'), { name: 'MaxRetriesPerRequestError' }),
      ],
    ]);
    const fail = (step: string) => {
      const err = faults.get(step);
      faults.delete(step);
      return err && Promise.reject(err);
    };
    const wrap = (b: BucketStore): BucketStore => {
      const sketches = Object.assign(Object.create(b.sketches) as BucketStore['sketches'], {
        read: (...args: Parameters<BucketStore['sketches']['read']>) => fail('sketches.read') ?? b.sketches.read(...args),
        ack: (...args: Parameters<BucketStore['sketches']['ack']>) => fail('sketches.ack') ?? b.sketches.ack(...args),
      });
      return Object.assign(Object.create(b) as BucketStore, {
        sketches,
        readOutbox: (...args: Parameters<BucketStore['readOutbox']>) => fail('readOutbox') ?? b.readOutbox(...args),
        ackOutbox: (...args: Parameters<BucketStore['ackOutbox']>) => fail('ackOutbox') ?? b.ackOutbox(...args),
      });
    };
    const { buckets, meter, metrics, worker } = setup(table, 'rdown', client, undefined, wrap);
    const failedAttempts: string[] = [];
    worker.on('failed', (job, err) => failedAttempts.push(`${job?.id}: ${err.message}`));
    await oneView(buckets, Date.parse('2023-05-03T12:00:00Z'));
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    expect([...faults.keys()]).toEqual([]);
    // No BullMQ attempt spent: every fault delayed its job.
    expect(failedAttempts).toEqual([]);
    expect(await queues[QUEUE.dynamoWrites].getFailedCount()).toBe(0);
    expect(await waitsFor(metrics, 'redis')).toBe(4);
    expect(await waitsFor(metrics, 'dynamodb')).toBe(0);
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('v')).toBe(1n);
    expect((await getItem({ client, table, meter }, 'S#product#P1', 'TOTAL'))!.attrs.get('v')).toBe(1n);
    expect(await redis.keys('rdown:{S}:o:*')).toEqual([]);
  });

  it("completes a written row's job when only the gauges' backlog read fails afterwards (no attempt spent, no failed job)", async () => {
    const table = await createTestTable(dyn.endpoint);
    let faults = 1;
    const wrap = (b: BucketStore): BucketStore =>
      Object.assign(Object.create(b) as BucketStore, {
        storeBacklog: (...args: Parameters<BucketStore['storeBacklog']>) =>
          faults-- > 0
            ? Promise.reject(new ReplyError('TALLY_ERR_NOT_A_COUNT rbl:{S}:counts entries is not an integer'))
            : b.storeBacklog(...args),
      });
    const { buckets, meter, worker } = setup(table, 'rbl', client, undefined, wrap);
    const failedAttempts: string[] = [];
    worker.on('failed', (job, err) => failedAttempts.push(`${job?.id}: ${err.message}`));
    await oneView(buckets, Date.parse('2023-05-03T12:00:00Z'));
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    expect(faults).toBeLessThan(1); // the fault was met
    expect(failedAttempts).toEqual([]);
    expect((await getItem({ client, table, meter }, 'S#product#P1', 'TOTAL'))!.attrs.get('v')).toBe(1n);
    expect(await redis.keys('rbl:{S}:o:*')).toEqual([]);
  });

  it('moves a row that cannot be written to the failed set with its reason; other rows keep flowing', async () => {
    const table = await createTestTable(dyn.endpoint);
    // A row DynamoDB refuses (every item grows far below 400 KB now, see the overflow items, so the refusal is
    // simulated: a ValidationException for the visitor's items).
    const huge = 'S#visitor#V';
    const refusing = {
      send: (cmd: { input: { Key?: { pk?: { S?: string } } } }) =>
        cmd.input.Key?.pk?.S === huge
          ? Promise.reject(
              Object.assign(new Error('Item size has exceeded the maximum allowed size'), {
                name: 'ValidationException',
                $metadata: { httpStatusCode: 400 },
              }),
            )
          : client.send(cmd as never),
    } as unknown as DynamoDBClient;
    const { buckets, worker } = setup(table, 'big', refusing);
    for (let seq = 1; seq <= 30; seq++) {
      const fields = new Map<string, number>();
      for (let p = 0; p < 80; p++) fields.set(`2023-123|pv#${'x'.repeat(120)}-${seq}-${p}`, 1);
      await buckets.apply(
        'S',
        `h${seq}`,
        new Map([
          [huge, fields],
          ['S', new Map([['2023-123|v', 1]])],
        ]),
        { now: seq * 10, dedupeTtlSeconds: 60 },
      );
      await buckets.seal('S', { now: seq * 10 + 5, minAgeMs: 0 });
    }
    await buckets.registerStore('S');
    await buckets.foldSealed('S', { now: 1000 });
    for (const r of await buckets.dueRows('S', 1000))
      await enqueue(queues, QUEUE.dynamoWrites, { store: 'S', pk: r.pk }, { jobId: jobIdFor('flush', 'S', r.pk, r.firstDirty) });
    await waitForQueuesIdle([queues[QUEUE.dynamoWrites]], { includeDelayed: true, timeoutMs: 30_000 });
    await worker.close();
    const failed = await queues[QUEUE.dynamoWrites].getFailed();
    expect(failed).toHaveLength(1);
    expect(failed[0]!.data.pk).toBe(huge);
    expect(failed[0]!.failedReason).toMatch(/^row S#visitor#V: ValidationException: .*size/i);
    const meter = createDynamoMeter();
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('v')).toBe(30n);
    // The row's counts stay in its outbox, not lost: a replay after a fix can still write them.
    expect(await redis.hlen(`big:{S}:o:${huge}`)).toBe(30 * 80);
  });
});
