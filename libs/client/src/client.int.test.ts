import { createServer, type AddressInfo, type Socket } from 'node:net';
import { redisKeys } from '@tally/key-layout';
import {
  createQueues,
  closeQueues,
  eventsJobSchema,
  jobIdFor,
  MAX_EVENTS_PER_JOB,
  QUEUE,
  queueFor,
  queuePrefix,
  QUEUE_SHARDS,
  shardOfStore,
  type TallyQueues,
} from '@tally/queues';
import {
  freePort,
  sleep,
  startRedis,
  startRedisCluster,
  startRedisWithReplica,
  startSentinel,
  waitFor,
  type RedisHandle,
} from '@tally/testing';
import { UnrecoverableError, Worker } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  ClientClosedError,
  createProducerConnection,
  createTallyClient,
  IdempotencyConflictError,
  InvalidArgumentError,
  QueueFullError,
  QueueUnavailableError,
  ReplicasBehindError,
  TooManyEventsError,
  UnknownStoreError,
  ValidationError,
  compileRules,
  defaultRules,
  type CompiledRules,
  type TallyClient,
  type TallyClientOptions,
} from './index';

let redis: RedisHandle;
let client: TallyClient;
let inspect: Redis;
let queues: TallyQueues;

const now = Date.now();
const view = (product: string, ts: number | string = now - 60_000) => ({ type: 'view', ts, dims: { product, visitor: 'V1' } });

beforeAll(async () => {
  redis = await startRedis();
  client = createTallyClient({ connection: redis.url });
  inspect = new Redis(redis.url, { maxRetriesPerRequest: null });
  inspect.on('error', () => {}); // the outage test kills Redis
  queues = createQueues(inspect);
  for (const q of Object.values(queues)) q.on('error', () => {});
  // What a running aggregator on the default rules publishes: the client rolls batches up only with it.
  await inspect.set(redisKeys('t').rules, compileRules(defaultRules).fingerprint);
});

afterAll(async () => {
  await client?.close();
  if (queues) await closeQueues(queues);
  inspect?.disconnect();
  await redis?.stop();
});

const waiting = () => queues.events.getWaitingCount();

describe('createTallyClient', () => {
  it('validates, normalizes and enqueues one job holding the batch', async () => {
    const before = await waiting();
    const res = await client.enqueueEvents('STORE1', [
      // An ISO string is normalized to epoch ms; derived from the test's clock, never a fixed time of day.
      view('P1', new Date(now - 90_000).toISOString()),
      { type: 'order', ts: now - 1_000, value: 19.99, dims: { visitor: 'V1' } },
      { type: 'order', ts: now - 1_000, value: '0.10' },
    ]);
    expect(res.accepted).toBe(3);
    expect(res.batchId).toMatch(/^batch-[A-Za-z0-9_-]{27}$/); // under the key the call was given (libs/intake)
    expect(await waiting()).toBe(before + 1);
    const job = await queues.events.getJob(res.batchId);
    expect(job?.name).toBe(QUEUE.events);
    expect(job?.data).toMatchObject({ batchId: res.batchId, store: 'STORE1', source: 'client' });
    expect(job?.data.events).toEqual([
      { type: 'view', ts: now - 90_000, dims: { product: 'P1', visitor: 'V1' } },
      { type: 'order', ts: now - 1_000, dims: { visitor: 'V1' }, value: '19.99' },
      { type: 'order', ts: now - 1_000, dims: {}, value: '0.1' }, // one spelling per value
    ]);
    expect(Math.abs(job!.data.receivedAt - Date.now())).toBeLessThan(5_000);
  });

  it("with the store's time zone, enqueues the batch rolled up with its visitors (rows and distinct), as the collector does", async () => {
    const res = await client.enqueueEvents('STORE1', [view('P1'), { ...view('P2'), dims: { product: 'P2', visitor: 'V2' } }], {
      timeZone: 'Europe/Berlin',
    });
    const job = eventsJobSchema.parse((await queues.events.getJob(res.batchId))?.data);
    expect(job).toMatchObject({ source: 'client', count: 2 });
    expect(job.events).toBeUndefined();
    const storeRow = job.distinct!.indexOf('STORE1');
    expect(job.distinct![storeRow + 1]).toBe(1);
    expect(Buffer.from(String(job.distinct![storeRow + 3]), 'base64')).toHaveLength(2 * 8); // V1 and V2
  });

  it("rolls a store's batches up in the time zone the aggregator published for its tenant; sends events while none is", async () => {
    const c = createTallyClient({ connection: redis.url });
    try {
      const events = [view('P1', now - 60_000), view('P2', now - 60_000)];
      await inspect.set(redisKeys('t').storeZone('ZONED1'), 'Asia/Tokyo', 'PX', 60_000);
      const published = await c.enqueueEvents('ZONED1', events);
      const stated = await c.enqueueEvents('ZONED1', events, { timeZone: 'Asia/Tokyo' });
      const [a, b] = await Promise.all(
        [published, stated].map(async (r) => eventsJobSchema.parse((await queues.events.getJob(r.batchId))?.data)),
      );
      expect(a!.events).toBeUndefined();
      expect(a!.rows).toEqual(b!.rows);
      expect(a!.distinct).toEqual(b!.distinct);
      const none = await c.enqueueEvents('NOZONE1', events);
      expect((await queues.events.getJob(none.batchId))?.data.events).toHaveLength(2);
      // The aggregator publishes a zone with the store's first batch: its absence is kept a second, not a minute.
      await inspect.set(redisKeys('t').storeZone('NOZONE1'), 'Asia/Tokyo', 'PX', 60_000);
      await sleep(1_100);
      const later = eventsJobSchema.parse((await queues.events.getJob((await c.enqueueEvents('NOZONE1', events)).batchId))?.data);
      expect(later.events).toBeUndefined();
      expect(later.rows).toHaveLength(a!.rows!.length);
    } finally {
      await c.close();
    }
  });

  it('sends events, not rows, while the aggregators publish another rules fingerprint or none, and says so once', async () => {
    const told: string[] = [];
    const custom = compileRules({ ...defaultRules, metrics: { ...defaultRules.metrics, Extra: { code: 'ex' } } });
    expect(custom.fingerprint).not.toBe(compileRules(defaultRules).fingerprint);
    // The same rules written in another key order have the same fingerprint.
    expect(compileRules(Object.fromEntries(Object.entries(defaultRules).reverse())).fingerprint).toBe(
      compileRules(defaultRules).fingerprint,
    );
    const c = createTallyClient({ connection: redis.url, rules: custom, onError: (e) => told.push(e.message) });
    const events = [view('P1'), view('P2')];
    const sent = async (store: string) =>
      (await queues.events.getJob((await c.enqueueEvents(store, events, { timeZone: 'UTC' })).batchId))?.data;
    try {
      expect((await sent('RULES1')).events).toHaveLength(2);
      expect((await sent('RULES1')).events).toHaveLength(2); // told once per fingerprint
      expect(told).toEqual([
        expect.stringMatching(/^the aggregators run rules [0-9a-f]{16}, this client [0-9a-f]{16}: batches go as events/),
      ]);
      // The aggregators now run the client's rules (a redeploy): rolled up again, read within a second.
      await inspect.set(redisKeys('t').rules, custom.fingerprint);
      await sleep(1_100);
      const rolled = await sent('RULES1');
      expect({ events: rolled.events, rows: rolled.rows?.length }).toEqual({ events: undefined, rows: expect.any(Number) });
      // None published (no aggregator running): events.
      await inspect.del(redisKeys('t').rules);
      const d = createTallyClient({ connection: redis.url, rules: custom });
      try {
        const job = await queues.events.getJob((await d.enqueueEvents('RULES1', events, { timeZone: 'UTC' })).batchId);
        expect(job?.data.events).toHaveLength(2);
      } finally {
        await d.close();
      }
    } finally {
      await inspect.set(redisKeys('t').rules, compileRules(defaultRules).fingerprint);
      await c.close();
    }
  });

  it('rejects the whole call when one event is bad, naming each', async () => {
    const before = await waiting();
    const err = await client
      .enqueueEvents('STORE1', [view('P1'), view('P#2'), { type: 'order', ts: now, value: Number.NaN }, { type: 'click', ts: now }])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    const v = err as ValidationError;
    expect(v.code).toBe('TALLY_ERR_VALIDATION');
    expect(v.errors.map((e) => [e.index, e.field])).toEqual([
      [1, 'dims.product'],
      [2, 'value'],
      [3, 'type'],
    ]);
    expect(v.message).toMatch(/^3 invalid event fields: #1 dims\.product: must be 1-128 characters/);
    expect(await waiting()).toBe(before);
  });

  it('counts a retried call once: the idempotency key fixes batch and job ids per store', async () => {
    const before = await waiting();
    const a = await client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'order-42' });
    const b = await client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'order-42' });
    const c = await client.enqueueEvents('STORE2', [view('P1')], { idempotencyKey: 'order-42' });
    expect(a.batchId).toBe(b.batchId);
    expect(a.batchId).toMatch(/^batch-[A-Za-z0-9_-]{27}$/);
    expect(c.batchId).not.toBe(a.batchId);
    expect(await waiting()).toBe(before + 2);
    await expect(client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'has space' })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: '' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('refuses an idempotency key reused for other events, enqueueing nothing', async () => {
    const a = await client.enqueueEvents('STORE1', [view('P1'), view('P2')], { idempotencyKey: 'order-43' });
    const before = await waiting();
    const err = await client.enqueueEvents('STORE1', [view('P1'), view('P3')], { idempotencyKey: 'order-43' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdempotencyConflictError);
    expect(err).toMatchObject({ code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT', idempotencyKey: 'order-43' });
    expect((err as Error).message).toMatch(
      /^idempotency key "order-43" was already used for a batch with other events; nothing was accepted/,
    );
    expect(await waiting()).toBe(before);
    // The same events again are still the same batch.
    expect((await client.enqueueEvents('STORE1', [view('P1'), view('P2')], { idempotencyKey: 'order-43' })).batchId).toBe(a.batchId);
    expect(await waiting()).toBe(before);
  });

  it("binds an idempotency key for two dedupe windows and a slack: the aggregators' window, else idempotencyWindowSeconds (24 h by default)", async () => {
    const r = await client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'order-44' });
    const ttl = (batchId: string) => inspect.ttl(redisKeys('t').idempotency('STORE1', batchId));
    // A batch is applied within a window of its acceptance and its dedupe record lasts a window and a slack from then.
    expect(await ttl(r.batchId)).toBeGreaterThan(2 * 86_400 + 8_640 - 60);
    const hourly = createTallyClient({ connection: redis.url, idempotencyWindowSeconds: 3_600 });
    try {
      const h = await hourly.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'order-45' });
      expect(await ttl(h.batchId)).toBeGreaterThan(7_560 - 60);
      expect(await ttl(h.batchId)).toBeLessThanOrEqual(7_560);
    } finally {
      await hourly.close();
    }
    // The aggregators' DEDUPE_WINDOW_SECONDS, as they publish it, wins over the client's own.
    await inspect.set(redisKeys('t').dedupeWindow, '604800', 'PX', 600_000);
    const following = createTallyClient({ connection: redis.url, idempotencyWindowSeconds: 3_600 });
    try {
      const w = await following.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'order-46' });
      expect(await ttl(w.batchId)).toBeGreaterThan(2 * 604_800 + 60_480 - 60);
    } finally {
      await following.close();
      await inspect.del(redisKeys('t').dedupeWindow);
    }
    for (const bad of [59, 30 * 86_400 + 1, 1.5]) {
      expect(() => createTallyClient({ connection: redis.url, idempotencyWindowSeconds: bad })).toThrow(
        expect.objectContaining({ code: 'TALLY_ERR_INVALID_ARGUMENT', field: 'idempotencyWindowSeconds' }),
      );
    }
  });

  it('refuses a receivedAt the aggregator would refuse the batch for, and a timeZone that is not one, enqueueing nothing', async () => {
    const before = await waiting();
    for (const receivedAt of [Math.floor(Date.now() / 1_000), Date.now() - 2 * 86_400_000, Date.now() + 3_600_000, 1.5]) {
      const err = await client.enqueueEvents('STORE1', [view('P1')], { receivedAt }).catch((e: unknown) => e);
      expect(err, String(receivedAt)).toBeInstanceOf(InvalidArgumentError);
      expect(err).toMatchObject({ field: 'receivedAt' });
    }
    const zone = await client.enqueueEvents('STORE1', [view('P1')], { timeZone: 'Mars/Olympus' }).catch((e: unknown) => e);
    expect(zone).toBeInstanceOf(InvalidArgumentError);
    expect(zone).toMatchObject({ field: 'timeZone', message: expect.stringContaining('"Mars/Olympus" is not an IANA time zone name') });
    expect(await waiting()).toBe(before);
    // A receivedAt a little in the past is what the job carries.
    const receivedAt = Date.now() - 60_000;
    const ok = await client.enqueueEvents('STORE1', [view('P1')], { receivedAt });
    expect((await queues.events.getJob(ok.batchId))?.data.receivedAt).toBe(receivedAt);
  });

  it("refuses a key whose batch the aggregator sent to the failed set, once the key's fingerprint is gone, rather than answer with that job", async () => {
    const layout = { keyPrefix: 'fk', shards: 1 };
    const c = createTallyClient({ connection: redis.url, keyPrefix: 'fk', backpressure: false });
    const fk = createQueues(inspect, layout);
    const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
    // The aggregator refusing every batch (as one for a store with no tenant, or past the dedupe window).
    const worker = new Worker(
      QUEUE.events,
      async () => {
        throw new UnrecoverableError('unknown store FAILED1: it has no tenant');
      },
      { connection: conn, prefix: queuePrefix(layout, QUEUE.events, 0) },
    );
    try {
      const first = await c.enqueueEvents('FAILED1', [view('P1')], { idempotencyKey: 'order-900' });
      await waitFor(async () => (await fk.events.getFailedCount()) === 1, { message: 'the batch in the failed set' });
      await worker.close();
      // While the fingerprint lasts, the same call again is the batch it was (and was answered for).
      expect((await c.enqueueEvents('FAILED1', [view('P1')], { idempotencyKey: 'order-900' })).batchId).toBe(first.batchId);
      // The fingerprint is gone (two dedupe windows), the failed job is not (14 days): the key is reused. (Its copy where
      // earlier versions look, bound in the upgrade window a new installation opens too, is gone as well.)
      const records = [redisKeys('fk').idempotency('FAILED1', first.batchId), fk.events.toKey(`idem:${first.batchId}`)];
      expect(await inspect.exists(...records)).toBe(2);
      await inspect.del(...records);
      for (let i = 0; i < 2; i++) {
        const err = await c.enqueueEvents('FAILED1', [view('P2')], { idempotencyKey: 'order-900' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(IdempotencyConflictError);
        expect(err).toMatchObject({ code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT', idempotencyKey: 'order-900', failedJobId: first.batchId });
        expect((err as Error).message).toMatch(/is now in the events queue's failed set .*npm run dlq -- replay events batch-/);
        expect(await inspect.exists(...records)).toBe(0); // not bound to the refused batch
      }
      expect(await fk.events.getWaitingCount()).toBe(0);
      expect((await fk.events.getJob(first.batchId))?.data.events).toHaveLength(1);
    } finally {
      await worker.close();
      await c.close();
      await closeQueues(fk);
      conn.disconnect();
    }
  });

  it('counts a retry once though some of its events passed the lateness horizon since the call was accepted', async () => {
    const horizon = 35 * 86_400_000;
    const events = [view('P1', Date.now() - horizon + 1_500), view('P2')];
    const before = await waiting();
    const first = await client.enqueueEvents('STORE1', events, { idempotencyKey: 'late-order' });
    await sleep(2_000);
    // The answer was lost; the retry comes once the first event is past the horizon.
    const again = await client.enqueueEvents('STORE1', events, { idempotencyKey: 'late-order' }).catch((e: unknown) => e);
    expect(again).toEqual(first);
    expect(await waiting()).toBe(before + 1);
    // A call never accepted with such an event is refused as before.
    await expect(client.enqueueEvents('STORE1', events, { idempotencyKey: 'late-order-2' })).rejects.toBeInstanceOf(ValidationError);
    expect(await waiting()).toBe(before + 1);
  });

  it('splits a large call into jobs of MAX_EVENTS_PER_JOB in one addBulk', async () => {
    const n = 2 * MAX_EVENTS_PER_JOB + 7;
    const events = Array.from({ length: n }, (_, i) => view(`P${i}`));
    const before = await waiting();
    const res = await client.enqueueEvents('STORE3', events, { idempotencyKey: 'big' });
    expect(res.accepted).toBe(n);
    expect(await waiting()).toBe(before + 3);
    const sizes = await Promise.all([0, 1, 2].map(async (i) => (await queues.events.getJob(`${res.batchId}.${i}`))?.data.events.length));
    expect(sizes).toEqual([MAX_EVENTS_PER_JOB, MAX_EVENTS_PER_JOB, 7]);
    const last = await queues.events.getJob(`${res.batchId}.2`);
    expect(last?.data.batchId).toBe(`${res.batchId}.2`);
    expect(last?.data.events[6].dims.product).toBe(`P${n - 1}`);
  });

  it('completes a split batch that failed part-way (addBulk is a pipeline, not a transaction) when retried under the key the error names, each part once', async () => {
    // A Redis user that may not touch a key ending in ".1": part 1 fails inside its script, parts 0 and 2 are added.
    await inspect.call('ACL', 'SETUSER', 'partial', 'on', '>pw', '~*[^1]', '~*[^.]1', '&*', '+@all');
    const c = createTallyClient({ connection: `redis://partial:pw@127.0.0.1:${redis.port}`, backpressure: false });
    try {
      const events = Array.from({ length: 2 * MAX_EVENTS_PER_JOB + 3 }, (_, i) => view(`B${i}`));
      const before = await waiting();
      const err = (await c.enqueueEvents('STORE4', events).catch((e: unknown) => e)) as QueueUnavailableError;
      expect(err).toBeInstanceOf(QueueUnavailableError);
      const batchId = jobIdFor('batch', 'STORE4', err.idempotencyKey!);
      const parts = [0, 1, 2].map((i) => `${batchId}.${i}`);
      expect(await Promise.all(parts.map(async (id) => (await queues.events.getJob(id))?.id))).toEqual([parts[0], undefined, parts[2]]);
      const firstPart0 = (await queues.events.getJob(parts[0]!))!.timestamp;
      await inspect.call('ACL', 'SETUSER', 'partial', 'allkeys');
      const done = await c.enqueueEvents('STORE4', events, { idempotencyKey: err.idempotencyKey! });
      expect(done).toEqual({ batchId, accepted: events.length });
      expect(await waiting()).toBe(before + 3);
      const jobs = await Promise.all(parts.map((id) => queues.events.getJob(id)));
      expect(jobs.map((j) => j?.data.events.length)).toEqual([MAX_EVENTS_PER_JOB, MAX_EVENTS_PER_JOB, 3]);
      expect(jobs[0]!.timestamp).toBe(firstPart0); // the part added before, not added again
    } finally {
      await c.close();
      await inspect.call('ACL', 'DELUSER', 'partial');
    }
  });

  it('refuses too many events, a bad store and an empty call without enqueuing', async () => {
    const small = createTallyClient({ connection: redis.url, limits: { maxEvents: 2 } });
    try {
      const err = await small.enqueueEvents('STORE1', [view('a'), view('b'), view('c')]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TooManyEventsError);
      expect((err as TooManyEventsError).message).toBe('3 events in one batch; the limit is 2');
      await expect(small.enqueueEvents('_tenant#x', [view('a')])).rejects.toMatchObject({
        code: 'TALLY_ERR_INVALID_ARGUMENT',
        field: 'store',
      });
      const before = await waiting();
      const empty = await small.enqueueEvents('STORE1', [], { idempotencyKey: 'empty-1' }).catch((e: unknown) => e);
      expect(empty).toBeInstanceOf(InvalidArgumentError);
      expect(empty).toMatchObject({ code: 'TALLY_ERR_INVALID_ARGUMENT', field: 'events' });
      expect((empty as Error).message).toBe('events must hold at least 1 event (got none); nothing was enqueued');
      expect(await waiting()).toBe(before);
    } finally {
      await small.close();
    }
  });

  it('refuses events that are not an array with InvalidArgumentError on `events`, before it waits for Redis', async () => {
    // Redis down and a call waiting for it as long as it may: a check made after the wait would never answer.
    const down = createTallyClient({ connection: `redis://127.0.0.1:${await freePort()}`, readyTimeoutMs: 2 ** 31 - 1 });
    try {
      const before = await waiting();
      for (const [events, got] of [
        [null, 'null'],
        [undefined, 'undefined'],
        [5, 'number 5'],
        [new Set([view('P1')]), 'a Set'],
        [view('P1'), 'an object'],
      ] as const) {
        for (const c of [client, down]) {
          const err = await c.enqueueEvents('STORE1', events as never).catch((e: unknown) => e);
          expect(err, got).toBeInstanceOf(InvalidArgumentError);
          expect(err).toMatchObject({ field: 'events', message: `events must be an array of events (got ${got}); nothing was enqueued` });
        }
      }
      expect(await waiting()).toBe(before);
    } finally {
      await down.close();
    }
  });

  it('refuses a third argument that is not its options, or an option it does not know, rather than drop the idempotency key', async () => {
    const before = await waiting();
    const thrown = (o: unknown) => client.enqueueEvents('STORE1', [view('P1')], o as never).catch((e: unknown) => e);
    expect(await thrown('order-1')).toMatchObject({
      name: 'InvalidArgumentError',
      field: 'options',
      message:
        `enqueueEvents' third argument "order-1" is invalid: its options, { idempotencyKey?, receivedAt?, timeZone? } ` +
        '(an idempotency key: { idempotencyKey: "order-1" }); nothing was enqueued',
    });
    for (const o of [null, 42, ['order-1']]) expect(await thrown(o), String(o)).toMatchObject({ field: 'options' });
    expect(await thrown({ idempotencykey: 'order-1' })).toMatchObject({
      field: 'options',
      message: expect.stringMatching(
        /^enqueueEvents option "idempotencykey" is unknown \(idempotencykey: idempotencyKey\?\): enqueueEvents options are idempotencyKey, receivedAt, timeZone/,
      ),
    });
    expect(await waiting()).toBe(before);
    // Known options left undefined are no options.
    expect((await client.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: undefined, timeZone: undefined })).accepted).toBe(1);
  });

  it('refuses a store the aggregator refused as unknown (no tenant) while its mark lasts, enqueueing nothing', async () => {
    // The mark the aggregator sets when it sends a batch for a store with no tenant to the failed set.
    const refusedAt = Date.now() - 5_000;
    await inspect.set(redisKeys('t').unknownStore('GHOST1'), String(refusedAt), 'PX', 60_000);
    const before = await waiting();
    const err = await client.enqueueEvents('GHOST1', [view('P1')], { idempotencyKey: 'ghost-order' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnknownStoreError);
    expect(err).toMatchObject({ code: 'TALLY_ERR_UNKNOWN_STORE', store: 'GHOST1', refusedAt: new Date(refusedAt) });
    expect((err as Error).message).toBe(
      `store "GHOST1" has no tenant: Tally's aggregator refused a batch for it at ${new Date(refusedAt).toISOString()} and nothing of this call was enqueued. ` +
        "Create the tenant (npm run tenants -- create GHOST1), then replay the refused batches (npm run dlq -- replay events --reason '^unknown store GHOST1:')",
    );
    expect(await waiting()).toBe(before);
    // Another installation's mark (KEY_PREFIX) is not this one's; once the mark is lifted the store is accepted.
    const other = createTallyClient({ connection: redis.url, keyPrefix: 'other' });
    try {
      expect((await other.enqueueEvents('GHOST1', [view('P1')])).accepted).toBe(1);
    } finally {
      await other.close();
    }
    await inspect.del(redisKeys('t').unknownStore('GHOST1'));
    expect((await client.enqueueEvents('GHOST1', [view('P1')], { idempotencyKey: 'ghost-order' })).accepted).toBe(1);
  });

  it('refuses with QueueFullError while the events queue is over its backpressure limit, enqueueing nothing, and takes calls once it drains', async () => {
    const bp = createTallyClient({ connection: redis.url, keyPrefix: 'bp', backpressure: { maxDepth: 2, checkEveryMs: 0 } });
    const bpQueues = createQueues(inspect, { keyPrefix: 'bp', shards: 1 });
    try {
      for (let i = 0; i < 3; i++) await bp.enqueueEvents('STORE1', [view(`P${i}`)]); // at depths 0, 1 and 2: taken
      const err = await bp.enqueueEvents('STORE1', [view('P9')], { idempotencyKey: 'full' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueueFullError);
      expect(err).toMatchObject({ code: 'TALLY_ERR_BACKPRESSURE', depth: 3, limit: 2, retryAfterSeconds: 2 });
      expect(await bpQueues.events.getWaitingCount()).toBe(3);
      await bpQueues.events.drain(); // the aggregators caught up
      await expect(bp.enqueueEvents('STORE1', [view('P9')], { idempotencyKey: 'full' })).resolves.toMatchObject({ accepted: 1 });
      // Off: no depth is read, nothing is refused for it.
      const off = createTallyClient({ connection: redis.url, keyPrefix: 'bp', backpressure: false });
      for (let i = 0; i < 3; i++) await off.enqueueEvents('STORE1', [view(`Q${i}`)]);
      await off.close();
      expect(await bpQueues.events.getWaitingCount()).toBe(4);
    } finally {
      await bp.close();
      await closeQueues(bpQueues);
    }
  });

  it("refuses a store only for its own events shard's backlog, as the collector: the stores of other shards are taken", async () => {
    const opts = { connection: redis.url, keyPrefix: 'bps', queueShards: 2 };
    const bp = createTallyClient({ ...opts, backpressure: { maxDepth: 2, checkEveryMs: 0 } });
    const sharded = createQueues(inspect, { keyPrefix: 'bps', shards: 2 });
    try {
      const stores = ['S1', 'S2', 'S3', 'S4', 'S5', 'S6'];
      const noisy = stores.find((s) => shardOfStore(s, 2) === 1)!;
      const quiet = stores.find((s) => shardOfStore(s, 2) === 0)!;
      for (let i = 0; i < 3; i++) await bp.enqueueEvents(noisy, [view(`P${i}`)]);
      await expect(bp.enqueueEvents(noisy, [view('P9')])).rejects.toMatchObject({ code: 'TALLY_ERR_BACKPRESSURE', depth: 3, limit: 2 });
      await expect(bp.enqueueEvents(quiet, [view('P9')])).resolves.toMatchObject({ accepted: 1 });
      expect(await queueFor(sharded, QUEUE.events, noisy).getWaitingCount()).toBe(3);
      expect(await queueFor(sharded, QUEUE.events, quiet).getWaitingCount()).toBe(1);
    } finally {
      await bp.close();
      await closeQueues(sharded);
    }
  });

  it('refuses a connection that is not a redis:// URL rather than open the default 127.0.0.1:6379', () => {
    for (const connection of ['', 'localhost:6379', 'http://127.0.0.1:6379', { REDIS_URL: '127.0.0.1:6379' }]) {
      const err = (() => {
        try {
          createTallyClient({ connection });
        } catch (e) {
          return e;
        }
      })();
      expect(err, JSON.stringify(connection)).toBeInstanceOf(InvalidArgumentError);
      expect(err).toMatchObject({ field: 'connection', message: expect.stringMatching(/is not a redis:\/\/ or rediss:\/\/ URL/) });
    }
  });

  it('refuses an option out of range with InvalidArgumentError naming it and its range, before it opens any connection', async () => {
    // A TCP server in Redis' place: it sees every connection a client opens (a client left open would keep
    // reconnecting, and the caller's process from exiting).
    const opened: Socket[] = [];
    const server = createServer((socket) => opened.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `redis://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const thrown = (o: TallyClientOptions) => {
      try {
        createTallyClient(o);
      } catch (err) {
        return err;
      }
    };
    const bad: Array<[Partial<TallyClientOptions>, string, RegExp]> = [
      [{ limits: { maxEvents: 0 } }, 'limits', /^limits\.maxEvents 0 is invalid: a whole number of events, at least 1$/],
      [{ limits: { clockSkewSeconds: 90_000 } }, 'limits', /^limits\.clockSkewSeconds 90000 is invalid: seconds from 0 to 82800/],
      [{ limits: { latenessHorizonDays: 0 } }, 'limits', /^limits\.latenessHorizonDays 0 is invalid/],
      ...[0, -1, 1.5, 257, Number.NaN].map((queueShards): [Partial<TallyClientOptions>, string, RegExp] => [
        { queueShards },
        'queueShards',
        new RegExp(`^queueShards ${queueShards} is invalid: a whole number from 1 to 256, the installation's QUEUE_SHARDS$`),
      ]),
      ...['', 'T', 'a:b', 'a'.repeat(17)].map((keyPrefix): [Partial<TallyClientOptions>, string, RegExp] => [
        { keyPrefix },
        'keyPrefix',
        /^keyPrefix ".*" is invalid: 1-16 lower-case letters and digits starting with a letter, as KEY_PREFIX$/,
      ]),
      ...[-1, 1.5, 2 ** 31].map((readyTimeoutMs): [Partial<TallyClientOptions>, string, RegExp] => [
        { readyTimeoutMs },
        'readyTimeoutMs',
        new RegExp(`^readyTimeoutMs ${readyTimeoutMs} is invalid: a whole number from 0 to 2147483647 ms$`),
      ]),
      ...[{ maxDepth: 0 }, { maxDepth: 1.5 }, { maxDepth: 10_000_001 }, { maxDepth: 10, checkEveryMs: -1 }].map(
        (backpressure): [Partial<TallyClientOptions>, string, RegExp] => [
          { backpressure },
          'backpressure',
          /^backpressure\.(maxDepth \S+ is invalid: a whole number from 1 to 10000000 \(as MAX_QUEUE_DEPTH\)|checkEveryMs -1 is invalid: a whole number from 0 to)/,
        ],
      ),
      [{ idempotencyWindowSeconds: 59 }, 'idempotencyWindowSeconds', /^idempotencyWindowSeconds 59 is invalid: .* from 60 to 2592000/],
      [
        { waitReplicas: { replicas: 0 } },
        'waitReplicas',
        /^waitReplicas \{"replicas":0\} is invalid: replicas is a whole number from 1 to 16/,
      ],
      // Plain-JS mistakes the types would have refused.
      [{ waitReplicas: null as never }, 'waitReplicas', /^waitReplicas null is invalid/],
      [
        { rules: defaultRules as unknown as CompiledRules },
        'rules',
        /^rules is invalid: compiled rules, as loadRules\(path\) or compileRules/,
      ],
      [{ onError: 'x' as never }, 'onError', /^onError "x" is invalid: a function/],
      [
        { limits: { latenessHorizonDays: 3_651 } },
        'limits',
        /^limits\.latenessHorizonDays 3651 is invalid: .* at most 3650 \(as LATENESS_HORIZON_DAYS\)$/,
      ],
      // Whole days, as LATENESS_HORIZON_DAYS.
      [
        { limits: { latenessHorizonDays: 0.5 } },
        'limits',
        /^limits\.latenessHorizonDays 0\.5 is invalid: a whole number of days, at least 1, at most 3650 \(as LATENESS_HORIZON_DAYS\)$/,
      ],
      // Keys it does not know, which would be ignored unseen (a misspelt option, a limit, a Redis target's variable).
      [
        { keyprefix: 'a' } as never,
        'options',
        /^option "keyprefix" is unknown \(keyprefix: keyPrefix\?\): options are connection, keyPrefix, /,
      ],
      [{ limits: { maxevents: 5 } as never }, 'limits', /^limits key "maxevents" is unknown \(maxevents: maxEvents\?\): /],
      [{ limits: 5 as never }, 'limits', /^limits 5 is invalid: \{ maxEvents\?, clockSkewSeconds\?, latenessHorizonDays\? \}$/],
      [{ backpressure: { maxDepth: 5, everyMs: 1 } as never }, 'backpressure', /^backpressure key "everyMs" is unknown: /],
      [{ waitReplicas: { replicas: 1, timeout: 5 } as never }, 'waitReplicas', /^waitReplicas key "timeout" is unknown: /],
      [
        { connection: { REDIS_URL: url, REDIS_CLUSTER_NODE: '127.0.0.1:7000' } as never },
        'connection',
        /^Redis target key "REDIS_CLUSTER_NODE" is unknown: Redis target keys are REDIS_URL, REDIS_CLUSTER_NODES, /,
      ],
      // A Redis target's nodes of neither form, `{ host, port }[]` or the apps' `host:port,host:port`.
      ...[5, 'localhost', '127.0.0.1:0', ['127.0.0.1:7000'], [{ host: '127.0.0.1', port: 0 }], { host: '127.0.0.1', port: 7000 }].flatMap(
        (nodes): Array<[Partial<TallyClientOptions>, string, RegExp]> =>
          (['REDIS_CLUSTER_NODES', 'REDIS_SENTINELS'] as const).map((name) => [
            { connection: { REDIS_URL: url, [name]: nodes as never } },
            'connection',
            new RegExp(
              `^connection\\.${name} .*is invalid: (a comma-separated list of host:port|host:port pairs with ports from 1|an array of)`,
            ),
          ]),
      ),
      [
        { connection: { REDIS_URL: url, REDIS_CLUSTER_NODES: '127.0.0.1:7000', REDIS_SENTINELS: [{ host: '127.0.0.1', port: 26379 }] } },
        'connection',
        /^connection has both REDIS_CLUSTER_NODES and REDIS_SENTINELS/,
      ],
      [
        { connection: { REDIS_URL: url, REDIS_SENTINELS: '127.0.0.1:26379', REDIS_SENTINEL_MASTER: 5 as never } },
        'connection',
        /^connection\.REDIS_SENTINEL_MASTER is invalid: a string$/,
      ],
    ];
    // A connection the caller passes is the caller's; the client opens no duplicate of it for waitReplicas either.
    const passed = createProducerConnection(url);
    passed.on('error', () => {});
    try {
      await waitFor(() => opened.length === 1, { message: "the caller's connection" });
      for (const [o, field, message] of bad) {
        for (const connection of [url, { REDIS_URL: url }, passed]) {
          const err = thrown({ connection, waitReplicas: { replicas: 1 }, ...o });
          expect(err, JSON.stringify(o)).toBeInstanceOf(InvalidArgumentError);
          expect(err, JSON.stringify(o)).toMatchObject({
            code: 'TALLY_ERR_INVALID_ARGUMENT',
            field,
            message: expect.stringMatching(message),
          });
        }
      }
      expect(thrown({ connection: undefined as unknown as string })).toMatchObject({ field: 'connection' });
      expect(thrown(undefined as never)).toMatchObject({
        field: 'connection',
        message: expect.stringMatching(/^createTallyClient takes its options/),
      });
      // BullMQ's connection options are not a connection: refused, not handed to BullMQ to connect with.
      const port = (server.address() as AddressInfo).port;
      expect(thrown({ connection: { host: '127.0.0.1', port } as never })).toMatchObject({
        field: 'connection',
        message: expect.stringMatching(/^connection \{ host, port \} is invalid: .* \(for \{ host, port \}: redis:\/\/host:port\)$/),
      });
      await sleep(500); // time for a connection to be opened
      expect(opened).toHaveLength(1);
      // The bounds themselves are taken, and the server sees the connection of each client made.
      const edges: Array<Partial<TallyClientOptions>> = [
        { queueShards: 256, keyPrefix: 'a'.repeat(16), readyTimeoutMs: 0, backpressure: { maxDepth: 1, checkEveryMs: 0 } },
        {
          queueShards: 1,
          keyPrefix: 'z9',
          readyTimeoutMs: 2 ** 31 - 1,
          backpressure: { maxDepth: 10_000_000 },
          limits: { clockSkewSeconds: 0, latenessHorizonDays: 3_650 },
        },
        // A key given as undefined is absent, its default taken, in `limits` as elsewhere.
        {
          keyPrefix: undefined,
          limits: { maxEvents: undefined, clockSkewSeconds: undefined, latenessHorizonDays: undefined },
          backpressure: { maxDepth: 5, checkEveryMs: undefined },
        },
      ];
      const made = edges.map((o) => createTallyClient({ connection: url, ...o }));
      try {
        await waitFor(() => opened.length === 1 + made.length, { message: 'the connections of the clients made' });
      } finally {
        await Promise.all(made.map((c) => c.close()));
      }
    } finally {
      passed.disconnect();
      for (const socket of opened) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('with waitReplicas, resolves once a replica holds the batch, and throws ReplicasBehindError (the batch enqueued) without one', async () => {
    for (const waitReplicas of [{ replicas: 0 }, { replicas: 1, timeoutMs: 5 }, { replicas: 1.5 }]) {
      expect(() => createTallyClient({ connection: redis.url, waitReplicas })).toThrowError(InvalidArgumentError);
    }
    const pair = await startRedisWithReplica();
    const replica = new Redis(pair.replica.url);
    const onReplica = createQueues(replica);
    // Its own connection (a URL), and a duplicate of one the caller passes.
    const own = createTallyClient({ connection: pair.master.url, waitReplicas: { replicas: 1 } });
    const passed = createProducerConnection(pair.master.url);
    const onPassed = createTallyClient({ connection: passed, waitReplicas: { replicas: 1 } });
    // The test's Redis has no replica.
    const alone = createTallyClient({ connection: redis.url, waitReplicas: { replicas: 1, timeoutMs: 100 } });
    try {
      for (const c of [own, onPassed]) {
        const { batchId } = await c.enqueueEvents('STORE1', [view('P1')]);
        expect(await onReplica.events.getJob(batchId)).toBeDefined();
      }
      const before = await waiting();
      const err = await alone.enqueueEvents('STORE1', [view('P1')], { idempotencyKey: 'k-replicas' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ReplicasBehindError);
      expect((err as Error).message).toMatch(/^0 of 1 Redis replicas acknowledged batch \S+ within 100 ms$/);
      expect((err as ReplicasBehindError).idempotencyKey).toBe('k-replicas');
      expect(await waiting()).toBe(before + 1);
      // A call without a key: its batch was given one, which the error names; a retry under it is the same job.
      const keyless = (await alone.enqueueEvents('STORE1', [view('P2')]).catch((e: unknown) => e)) as ReplicasBehindError;
      expect(keyless).toBeInstanceOf(ReplicasBehindError);
      expect(keyless.idempotencyKey).toMatch(/^auto-[\w-]{22}$/);
      // The key is bound to the events it was given for: a retry under it with others is refused, not deduped away.
      const other = await alone
        .enqueueEvents('STORE1', [view('P2'), view('P3')], { idempotencyKey: keyless.idempotencyKey! })
        .catch((e: unknown) => e);
      expect(other).toBeInstanceOf(IdempotencyConflictError);
      expect(await waiting()).toBe(before + 2);
      const retry = await alone.enqueueEvents('STORE1', [view('P2')], { idempotencyKey: keyless.idempotencyKey! }).catch((e: unknown) => e);
      expect(retry).toBeInstanceOf(ReplicasBehindError);
      expect(await waiting()).toBe(before + 2);
    } finally {
      await Promise.all([own.close(), onPassed.close(), alone.close()]);
      passed.disconnect();
      await closeQueues(onReplica);
      replica.disconnect();
      await pair.stop();
    }
  });

  it('with waitReplicas on a Redis Cluster, fences the master of the jobs and every master the idempotency record went to', async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const inspectCluster = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
    const sharded = createQueues(inspectCluster, { keyPrefix: 't', shards: 3 });
    // The test cluster has no replicas: every wait refuses, after the batch is enqueued.
    const onCluster = createTallyClient({
      connection: { REDIS_URL: `redis://${cluster.seeds[0]!.host}:${cluster.seeds[0]!.port}`, REDIS_CLUSTER_NODES: cluster.seeds },
      queueShards: 3,
      waitReplicas: { replicas: 1, timeoutMs: 100 },
    });
    try {
      const store = ['S1', 'S2', 'S3', 'S4', 'S5'].find((s) => shardOfStore(s, 3) !== 0)!;
      const err = await onCluster.enqueueEvents(store, [view('P1')], { idempotencyKey: 'k-cluster' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ReplicasBehindError);
      expect((err as Error).message).toMatch(/^0 of 1 Redis replicas acknowledged batch \S+ within 100 ms$/);
      const [jobs, first] = [queueFor(sharded, QUEUE.events, store), sharded[QUEUE_SHARDS].events[0]!];
      expect(await jobs.getWaitingCount()).toBe(1);
      // The record is in the store's slot and, in the upgrade window (which a new installation opens too), on the first
      // events shard, where earlier versions look for it. The fence keys: the jobs' shard's, the store's and the first
      // shard's, each under its hash tag, so each went to the master holding those keys.
      const keys = redisKeys('t');
      expect(await inspectCluster.exists(keys.idempotency(store, jobIdFor('batch', store, 'k-cluster')))).toBe(1);
      const fences = [jobs.toKey('fence'), keys.fence(store), first.toKey('fence')];
      for (const fence of fences) expect(await inspectCluster.pttl(fence), fence).toBeGreaterThan(0);
      expect(new Set(fences).size).toBe(3);
    } finally {
      await onCluster.close();
      await closeQueues(sharded);
      inspectCluster.disconnect();
      await cluster.stop();
    }
  });

  it("takes a Redis target's REDIS_CLUSTER_NODES as the apps' environment gives it, host:port,host:port", async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const inspectCluster = new Cluster(cluster.seeds, { redisOptions: { maxRetriesPerRequest: 0 } });
    const sharded = createQueues(inspectCluster, { keyPrefix: 't', shards: 3 });
    const REDIS_URL = `redis://${cluster.seeds[0]!.host}:${cluster.seeds[0]!.port}`;
    const onCluster = createTallyClient({
      connection: { REDIS_URL, REDIS_CLUSTER_NODES: cluster.nodesEnv },
      queueShards: 3,
      readyTimeoutMs: 10_000,
    });
    try {
      expect(cluster.nodesEnv).toMatch(/^127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)+$/);
      for (const store of ['S1', 'S2', 'S3']) {
        const r = await onCluster.enqueueEvents(store, [view('P1')]);
        expect(await queueFor(sharded, QUEUE.events, store).getJob(r.batchId), store).toBeDefined();
      }
    } finally {
      await onCluster.close();
      await closeQueues(sharded);
      inspectCluster.disconnect();
      await cluster.stop();
    }
  });

  it('made while Redis is unreachable, throws QueueUnavailableError after readyTimeoutMs (not hangs), and works once Redis is up', async () => {
    const port = await freePort();
    const c = createTallyClient({ connection: `redis://127.0.0.1:${port}`, readyTimeoutMs: 300 });
    let late: RedisHandle | undefined;
    try {
      const started = Date.now();
      const err = await c.enqueueEvents('STORE9', [view('P1')]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueueUnavailableError);
      expect(Date.now() - started).toBeLessThan(5_000);
      // Events are still checked first: a bad batch is a ValidationError, which no retry would cure; so is a bad zone.
      expect(await c.enqueueEvents('STORE9', [view('P1', 'yesterday')]).catch((e: unknown) => e)).toBeInstanceOf(ValidationError);
      expect(await c.enqueueEvents('STORE9', [view('P1')], { timeZone: 'Mars/Olympus' }).catch((e: unknown) => e)).toMatchObject({
        code: 'TALLY_ERR_INVALID_ARGUMENT',
        field: 'timeZone',
      });
      late = await startRedis({ port });
      const conn = new Redis(late.url, { maxRetriesPerRequest: null });
      const probe = createQueues(conn);
      try {
        const ok = await waitFor(() => c.enqueueEvents('STORE9', [view('P2')], { idempotencyKey: 'late-redis' }), { timeoutMs: 10_000 });
        expect(ok.accepted).toBe(1);
        expect(await probe.events.getWaitingCount()).toBe(1);
      } finally {
        await closeQueues(probe);
        conn.disconnect();
      }
    } finally {
      await c.close();
      await late?.stop();
    }
  });

  it('close() refuses new calls with ClientClosedError, and resolves once the calls in flight settled, each enqueued', async () => {
    const c = createTallyClient({ connection: redis.url });
    await c.enqueueEvents('CLOSE1', [view('P1')]); // connected
    const settled: string[] = [];
    const calls = Array.from({ length: 20 }, (_, i) =>
      c.enqueueEvents('CLOSE1', [view('P1')], { idempotencyKey: `close-${i}` }).then(
        () => settled.push('enqueued'),
        (e: { code?: string }) => settled.push(e.code ?? String(e)),
      ),
    );
    const closed = c.close().then(() => settled.push('closed'));
    const late = await c.enqueueEvents('CLOSE1', [view('P1')]).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(ClientClosedError);
    expect(late).toMatchObject({ code: 'TALLY_ERR_CLIENT_CLOSED', message: expect.stringMatching(/^this Tally client is closed/) });
    await closed;
    await Promise.all(calls);
    expect(settled).toEqual([...Array<string>(20).fill('enqueued'), 'closed']);
    await c.close(); // again: resolves
  });

  it('while connecting, the calls waiting share one pair of listeners on the connection, however many', async () => {
    const conn = createProducerConnection(`redis://127.0.0.1:${await freePort()}`); // nothing listens: never ready
    conn.on('error', () => {});
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const c = createTallyClient({ connection: conn, readyTimeoutMs: 200 });
    try {
      const before = [conn.listenerCount('ready'), conn.listenerCount('end')];
      const calls = Array.from({ length: 30 }, () => c.enqueueEvents('STORE1', [view('P1')]).catch((e: unknown) => e));
      expect([conn.listenerCount('ready'), conn.listenerCount('end')]).toEqual(before.map((n) => n + 1));
      for (const err of await Promise.all(calls)) expect(err).toBeInstanceOf(QueueUnavailableError);
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
      await c.close();
      conn.disconnect();
    }
  });

  it('on a Redis that does not answer, fails a call at its first read that times out, rather than wait again for its next', async () => {
    const frozen = await startRedis();
    const conn = createProducerConnection(frozen.url, { commandTimeoutMs: 300 });
    conn.on('error', () => {});
    const depth = createTallyClient({ connection: conn, backpressure: { maxDepth: 1_000, checkEveryMs: 0 } });
    const noDepth = createTallyClient({ connection: conn, backpressure: false });
    const sent = vi.spyOn(conn, 'sendCommand');
    const gets = () => sent.mock.calls.filter(([command]) => command.name === 'get').length;
    try {
      for (const c of [depth, noDepth]) await c.enqueueEvents('FROZEN1', [view('P1')]);
      await frozen.kill('SIGSTOP');
      sent.mockClear();
      // The depth read times out: nothing more is sent (the zone's and the unknown-store mark's GETs were, each
      // waiting as long again).
      const err = await depth.enqueueEvents('FROZEN1', [view('P1')], { idempotencyKey: 'frozen-1' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueueUnavailableError);
      expect(err).toMatchObject({ message: 'Redis did not answer: Command timed out; nothing was enqueued', idempotencyKey: 'frozen-1' });
      expect(gets()).toBe(0);
      // Without backpressure, the zone's read (a store not read yet) is the one that times out: the only GET.
      expect(await noDepth.enqueueEvents('FROZEN2', [view('P1')]).catch((e: unknown) => e)).toBeInstanceOf(QueueUnavailableError);
      expect(gets()).toBe(1);
      // A bad batch is still a ValidationError, which no retry would cure.
      expect(await depth.enqueueEvents('FROZEN1', [view('P1', 'yesterday')]).catch((e: unknown) => e)).toBeInstanceOf(ValidationError);
      // So is a bad argument an InvalidArgumentError naming it, as when Redis is down.
      for (const [call, field] of [
        [() => depth.enqueueEvents('bad id!', [view('P1')]), 'store'],
        [() => depth.enqueueEvents('FROZEN1', []), 'events'],
        [() => depth.enqueueEvents('FROZEN1', [view('P1')], { idempotencyKey: 'has space' }), 'idempotencyKey'],
        [() => depth.enqueueEvents('FROZEN1', [view('P1')], { timeZone: 'Mars/Base' }), 'timeZone'],
      ] as const)
        expect(await call().catch((e: unknown) => e)).toMatchObject({ name: 'InvalidArgumentError', field });
    } finally {
      await frozen.kill('SIGCONT');
      sent.mockRestore();
      await Promise.all([depth.close(), noDepth.close()]);
      conn.disconnect();
      await frozen.stop();
    }
  });

  it('fails fast with QueueUnavailableError while Redis is down, and works again after', async () => {
    const conn = createProducerConnection(redis.url);
    conn.on('error', () => {});
    const c = createTallyClient({ connection: conn, readyTimeoutMs: 200 });
    try {
      // Connected first: on a loaded machine the first connection alone can take longer than readyTimeoutMs.
      await waitFor(() => conn.status === 'ready', { timeoutMs: 10_000, message: 'the first connection' });
      expect((await c.enqueueEvents('STORE9', [view('P1')])).accepted).toBe(1);
      await redis.kill('SIGKILL');
      const started = Date.now();
      const err = await c.enqueueEvents('STORE9', [view('P1')]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueueUnavailableError);
      expect(Date.now() - started).toBeLessThan(3_000);
      await redis.restart();
      // Retried until the connection is back; the idempotency key makes the retries count once.
      const again = await waitFor(() => c.enqueueEvents('STORE9', [view('P2')], { idempotencyKey: 'after-restart' }), {
        timeoutMs: 10_000,
      });
      expect(again.accepted).toBe(1);
      const job = await waitFor(() => queues.events.getJob(again.batchId), { timeoutMs: 10_000 });
      expect(job.data.events).toHaveLength(1);
    } finally {
      await c.close();
      conn.disconnect();
    }
  });

  it("takes a Redis target's REDIS_SENTINELS as the apps' environment gives it, host:port,host:port", async () => {
    const sentinel = await startSentinel({ masterPort: redis.port });
    const c = createTallyClient({
      connection: { REDIS_URL: redis.url, REDIS_SENTINELS: `127.0.0.1:${sentinel.port}` },
      readyTimeoutMs: 10_000,
    });
    try {
      const r = await c.enqueueEvents('STORE9', [view('P1')]);
      expect(r.accepted).toBe(1);
      expect(await queues.events.getJob(r.batchId)).toBeDefined();
    } finally {
      await c.close();
      await sentinel.stop();
    }
  });

  it('tells onError each distinct Redis error once per outage, not once per reconnect and per queue shard', async () => {
    const port = await freePort(); // nothing listens: every connection attempt fails alike
    const url = `redis://127.0.0.1:${port}`;
    // The caller's connection, whose own errors (one per attempt) count the attempts; the client's queues re-emit them.
    const conn = createProducerConnection(url);
    const attempts: Error[] = [];
    conn.on('error', (e) => attempts.push(e));
    const told: Error[] = [];
    const owned: Error[] = [];
    const c = createTallyClient({ connection: conn, queueShards: 16, onError: (e) => told.push(e) });
    const own = createTallyClient({ connection: url, queueShards: 16, onError: (e) => owned.push(e) });
    let up: RedisHandle | undefined;
    try {
      await waitFor(() => attempts.length >= 3 && owned.length > 0, { timeoutMs: 20_000, message: 'three failed connection attempts' });
      expect(told.map((e) => e.message)).toEqual([attempts[0]!.message]);
      expect(owned.map((e) => e.message)).toEqual([attempts[0]!.message]);
      // Redis up, then down again: a new outage, told again, once.
      up = await startRedis({ port });
      await waitFor(() => conn.status === 'ready', { timeoutMs: 20_000, message: 'the connection back' });
      await up.stop();
      const seen = attempts.length;
      await waitFor(() => attempts.length >= seen + 3, { timeoutMs: 20_000, message: 'three more failed attempts' });
      const again = told.slice(1).map((e) => e.message);
      expect(again).toContain(attempts[0]!.message);
      expect(again).toEqual([...new Set(again)]);
    } finally {
      await Promise.all([c.close(), own.close()]);
      conn.disconnect();
      await up?.stop();
    }
  });

  it('close() leaves no timer or socket behind while Redis is down: the process can exit at once', async () => {
    const mine = () => {
      const r = process.getActiveResourcesInfo();
      return { timers: r.filter((x) => x === 'Timeout').length, sockets: r.filter((x) => x === 'TCPSocketWrap').length };
    };
    const before = mine();
    const told: Error[] = [];
    const c = createTallyClient({ connection: `redis://127.0.0.1:${await freePort()}`, onError: (e) => told.push(e) });
    await waitFor(() => told.length > 0, { message: 'a failed connection attempt' });
    await c.close();
    // Its socket closes as it ends (an attempt may have been under way); ioredis armed a timer of 2 s on it.
    await waitFor(() => mine().sockets <= before.sockets, { message: 'the socket closed' });
    // No more than before: the process's other timers (the test runner's) may have ended meanwhile.
    const after = mine();
    expect(after.timers).toBeLessThanOrEqual(before.timers);
    expect(after.sockets).toBeLessThanOrEqual(before.sockets);
  });
});
