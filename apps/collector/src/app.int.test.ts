import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { collectorEnv, loadConfig, type CollectorConfig } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import type { Intake } from '@tally/intake';
import { createLogger } from '@tally/observability';
import { closeQueues, createQueues, eventsJobSchema, ReplicasBehindError, type TallyQueues } from '@tally/queues';
import { eventInputSchema, loadRules } from '@tally/schema';
import { createTenantAdmin, keyIdOf, type TenantAdmin } from '@tally/tenants';
import {
  createTestTable,
  openApi31Errors,
  startDynalite,
  sleep,
  startRedis,
  sumOfJobRows,
  waitFor,
  type DynaliteHandle,
  type RedisHandle,
} from '@tally/testing';
import { Redis } from 'ioredis';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type CollectorApp } from './app';
import { closeCollectorDeps, createCollectorDeps, type CollectorResources } from './deps';

let redis: RedisHandle;
let dynalite: DynaliteHandle;
let table: string;
let admin: TenantAdmin;
let adminDynamo: ReturnType<typeof createDynamoClient>;
let res: CollectorResources;
let app: CollectorApp;
let inspect: Redis;
let queues: TallyQueues;
const keys = { ingest: '', read: '', other: '', revoked: '', unseen: '' };

const TTL_MS = 300;

async function startCollector(
  env: Record<string, string>,
): Promise<{ res: CollectorResources; app: CollectorApp; config: CollectorConfig }> {
  const config = loadConfig(collectorEnv, {
    REDIS_URL: redis.url,
    DYNAMODB_ENDPOINT: dynalite.endpoint,
    DYNAMODB_TABLE: table,
    KEY_CACHE_TTL_MS: String(TTL_MS),
    KEY_LOOKUP_TIMEOUT_MS: '500',
    ...env,
  });
  const r = createCollectorDeps(config, createLogger({ name: 'collector-test', level: 'silent' }), loadRules());
  const a = await buildApp(r.deps);
  r.backpressure.start();
  await waitFor(() => r.redis.status === 'ready' && r.backpressure.depth !== undefined, { message: 'collector connected to redis' });
  return { res: r, app: a, config };
}

beforeAll(async () => {
  [redis, dynalite] = await Promise.all([startRedis(), startDynalite()]);
  table = await createTestTable(dynalite.endpoint);
  adminDynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  admin = createTenantAdmin({ dynamo: adminDynamo, table });
  await admin.createTenant('SHOP1', { timeZone: 'Europe/Berlin' });
  await admin.createTenant('SHOP2');
  keys.ingest = await admin.issueKey('SHOP1', ['ingest'], 'web');
  keys.read = await admin.issueKey('SHOP1', ['read'], 'dashboard');
  keys.other = await admin.issueKey('SHOP2', ['ingest', 'read'], 'other shop');
  keys.revoked = await admin.issueKey('SHOP1', ['ingest'], 'to revoke');
  keys.unseen = await admin.issueKey('SHOP1', ['ingest'], 'first used during the outage');
  inspect = new Redis(redis.url, { maxRetriesPerRequest: null });
  inspect.on('error', () => {});
  // The aggregators' rules fingerprint, as they publish it: the collector rolls batches up only while it is its own.
  await inspect.set(redisKeys('t').rules, loadRules().fingerprint);
  ({ res, app } = await startCollector({}));
  queues = createQueues(inspect);
  for (const q of Object.values(queues)) q.on('error', () => {});
});

afterAll(async () => {
  await app?.close();
  if (res) await closeCollectorDeps(res);
  if (queues) await closeQueues(queues);
  inspect?.disconnect();
  adminDynamo?.destroy();
  await Promise.all([redis?.stop(), dynalite?.stop()]);
});

const iso = (msAgo = 60_000) => new Date(Date.now() - msAgo).toISOString();
const view = (product = 'P1', extra: Record<string, unknown> = {}) => ({
  type: 'view',
  ts: iso(),
  dims: { product, visitor: 'V1' },
  ...extra,
});

interface PostOptions {
  key?: string | null;
  contentType?: string;
  query?: string;
  /** A header given as a list is sent once per value. */
  headers?: Record<string, string | string[]>;
}

function post(payload: unknown, opts: PostOptions = {}, target = app) {
  const key = opts.key === undefined ? keys.ingest : opts.key;
  const headers: Record<string, string | string[]> = { 'content-type': opts.contentType ?? 'application/json', ...opts.headers };
  if (key !== null) headers['authorization'] = `Bearer ${key}`;
  return target.inject({
    method: 'POST',
    url: `/v1/events${opts.query ?? ''}`,
    headers,
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

const waiting = () => queues.events.getWaitingCount();

/** Runs `fn` with the clock `ms` off (a retry later, or a collector whose clock is behind), once Redis reads as up then. */
async function shifted<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  const real = Date.now.bind(Date);
  const clock = vi.spyOn(Date, 'now').mockImplementation(() => real() + ms);
  try {
    await waitFor(() => res.backpressure.redisUp, { message: 'backpressure read the queue at the shifted clock' });
    return await fn();
  } finally {
    clock.mockRestore();
  }
}

describe('POST /v1/events', () => {
  it('rolls a batch up only while the aggregators publish its own rules fingerprint, else sends its events', async () => {
    // A collector started while the aggregators run other rules (a rolling deploy of RULES_FILE).
    await inspect.set(redisKeys('t').rules, 'other-rules');
    const other = await startCollector({});
    try {
      const first = await post([view('P1')], {}, other.app);
      expect(first.statusCode).toBe(202);
      const asEvents = (await queues.events.getJob(first.json().batchId))?.data;
      expect(asEvents?.rows).toBeUndefined();
      expect(asEvents?.events).toHaveLength(1);
      // Once they publish the collector's own (read again within a second while it differs), batches go rolled up.
      await inspect.set(redisKeys('t').rules, loadRules().fingerprint);
      await sleep(1_100);
      const second = await post([view('P1')], {}, other.app);
      const rolled = (await queues.events.getJob(second.json().batchId))?.data;
      expect(rolled?.events).toBeUndefined();
      expect(sumOfJobRows(rolled?.rows, 'SHOP1#product#P1', 'v')).toBe(1n);
    } finally {
      await other.app.close();
      await closeCollectorDeps(other.res);
    }
  });

  it('enqueues a JSON array as one job for the store of the key and answers 202 after Redis has it', async () => {
    const before = await waiting();
    const r = await post([view('P1'), { type: 'order', ts: Date.now() - 1_000, value: 19.99, dims: { visitor: 'V1' } }, view('a.b:c')]);
    expect(r.statusCode).toBe(202);
    const body = r.json();
    expect(Object.keys(body).sort()).toEqual(['accepted', 'batchId']);
    expect(body.accepted).toBe(3);
    expect(await waiting()).toBe(before + 1);
    const job = await queues.events.getJob(body.batchId);
    expect(job?.data).toMatchObject({ batchId: body.batchId, store: 'SHOP1', source: 'http' });
    // Rolled up by the collector in the store's zone: the job carries the counts, not the events.
    expect(job?.data.events).toBeUndefined();
    expect(job?.data.count).toBe(3);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1#product#P1', 'v')).toBe(1n);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1#product#a.b:c', 'v')).toBe(1n);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1', 'v')).toBe(2n);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1', 'o')).toBe(1n);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1', 'r')).toBe(1999n);
  });

  it("carries the batch's visitors in the rolled-up job (distinct), so UniqueVisitors counts them as the aggregator applies it", async () => {
    const visit = (product: string, visitor: string) => ({ type: 'view', ts: iso(), dims: { product, visitor } });
    const r = await post([
      visit('U1', 'V1'),
      visit('U1', 'V2'),
      visit('U2', 'V1'),
      visit('U1', 'V1'),
      visit('U2', 'V3'),
      { type: 'view', ts: iso(), dims: { product: 'U1' } },
    ]);
    expect(r.statusCode).toBe(202);
    const job = eventsJobSchema.parse((await queues.events.getJob(r.json().batchId))?.data);
    expect(job.events).toBeUndefined();
    // The aggregator's path for a rolled-up job: the members into the sketches (twice: a retried job), then the rows.
    const buckets = new BucketStore({ redis: inspect, rules: loadRules(), prefix: 'uv-test' });
    for (let i = 0; i < 2; i++) await buckets.sketches.add('SHOP1', job.distinct!);
    await buckets.applyRows('SHOP1', job.batchId, job.rows!, { now: Date.now(), dedupeTtlSeconds: 60 });
    const uniques = async (pk: string) => {
      const [live] = await buckets.sketches.read('SHOP1', [pk]);
      return (await buckets.sketches.union('SHOP1', [live!.map((s) => s.blob)], false))[0]!.count;
    };
    expect(await uniques('SHOP1')).toBe(3);
    expect(await uniques('SHOP1#product#U1')).toBe(2);
    expect(await uniques('SHOP1#product#U2')).toBe(2);
  });

  it('takes NDJSON, one event per line, and names lines that are not JSON', async () => {
    const ok = await post(`${JSON.stringify(view('N1'))}\n\n${JSON.stringify(view('N2'))}\n`, { contentType: 'application/x-ndjson' });
    expect(ok.statusCode).toBe(202);
    expect(ok.json().accepted).toBe(2);
    const bad = await post(`${JSON.stringify(view('N1'))}\n{"type":"view",\n`, { contentType: 'application/x-ndjson; charset=utf-8' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().errors).toEqual([{ index: 1, field: '(event)', reason: expect.stringMatching(/^line 2 is not valid JSON/) }]);
  });

  it('refuses a request with any bad event whole, listing each by index, field and reason', async () => {
    const before = await waiting();
    const r = await post([view('P1'), view('P#1'), { type: 'click', ts: iso() }, view('P2', { ts: 'yesterday' })]);
    expect(r.statusCode).toBe(400);
    const body = r.json();
    expect(body).toMatchObject({ status: 400, code: 'TALLY_ERR_VALIDATION', rejected: 3 });
    expect(body.detail).toBe('3 of 4 events are invalid; nothing was accepted (add ?partial=true to accept the valid ones)');
    expect(body.errors.map((e: { index: number; field: string }) => [e.index, e.field])).toEqual([
      [1, 'dims.product'],
      [2, 'type'],
      [3, 'ts'],
    ]);
    expect(await waiting()).toBe(before);
  });

  it('with ?partial=true accepts the good events and lists the rest', async () => {
    const before = await waiting();
    const r = await post([view('P1'), view('P|1'), view('P2')], { query: '?partial=true' });
    expect(r.statusCode).toBe(202);
    const body = r.json();
    expect(body).toMatchObject({ accepted: 2, rejected: 1, acceptedIndexes: [0, 2] });
    expect(body.errors).toEqual([{ index: 1, field: 'dims.product', reason: 'must be 1-128 characters of A-Z a-z 0-9 _ . : -' }]);
    expect(await waiting()).toBe(before + 1);
    const rows = (await queues.events.getJob(body.batchId))?.data.rows;
    expect(['P1', 'P|1', 'P2'].map((p) => sumOfJobRows(rows, `SHOP1#product#${p}`, 'v'))).toEqual([1n, 0n, 1n]);
    expect(sumOfJobRows(rows, 'SHOP1', 'v')).toBe(2n);
    const none = await post([view('P|1')], { query: '?partial=true' });
    expect(none.statusCode).toBe(400);
    expect(none.json().detail).toBe('1 of 1 events are invalid; nothing was accepted');
    expect((await post([view()], { query: '?partial=maybe' })).statusCode).toBe(400);
    const misspelt = await post([view('P1')], { query: '?partal=true' });
    expect(misspelt.statusCode).toBe(400);
    expect(misspelt.json()).toMatchObject({ field: 'partal', detail: 'unknown parameter "partal"; known: partial' });
    expect(await waiting()).toBe(before + 1);
  });

  it('counts a retried request once: same Idempotency-Key, same batch and job, per store', async () => {
    const before = await waiting();
    const headers = { 'idempotency-key': 'checkout-7f3a' };
    const events = [view('P1')]; // a retry sends the same body
    const a = await post(events, { headers });
    const b = await post(events, { headers });
    const c = await post(events, { headers, key: keys.other });
    expect([a.statusCode, b.statusCode, c.statusCode]).toEqual([202, 202, 202]);
    expect(a.json().batchId).toBe(b.json().batchId);
    expect(c.json().batchId).not.toBe(a.json().batchId);
    expect(await waiting()).toBe(before + 2);
    expect((await queues.events.getJob(c.json().batchId))?.data.store).toBe('SHOP2');
    const bad = await post([view('P1')], { headers: { 'idempotency-key': 'with space' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().detail).toMatch(/Idempotency-Key must be 1-255 visible ASCII characters/);
    // Two headers are one value to Node ("x1, x2"): the answer says the header came twice, and nothing is counted.
    const twice = await post([view('P1')], { headers: { 'idempotency-key': ['x1', 'x2'] } });
    expect([twice.statusCode, twice.json()]).toEqual([
      400,
      expect.objectContaining({
        code: 'TALLY_ERR_BAD_REQUEST',
        field: 'idempotency-key',
        detail: 'Idempotency-Key is sent twice; send one key per request',
      }),
    ]);
    expect(await waiting()).toBe(before + 2);
  });

  it('refuses an Idempotency-Key reused for other events with 422 naming the key, accepting nothing', async () => {
    const headers = { 'idempotency-key': 'order-1001' };
    const first = [view('P1'), view('P2')];
    const a = await post(first, { headers });
    expect(a.statusCode).toBe(202);
    const before = await waiting();
    const job = await queues.events.getJob(a.json().batchId);
    // Same events in another JSON key order: the same batch, 202 with the same batch id.
    const reordered = first.map((e) => ({ dims: { visitor: e.dims.visitor, product: e.dims.product }, ts: e.ts, type: e.type }));
    const again = await post(reordered, { headers });
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual({ accepted: 2, batchId: a.json().batchId });
    // Other events under the same key: refused, whatever the difference.
    for (const other of [[view('P1'), view('P3')], [view('P1')], [...first, view('P2')]]) {
      const r = await post(other, { headers });
      expect(r.statusCode).toBe(422);
      expect(r.json()).toMatchObject({
        code: 'TALLY_ERR_IDEMPOTENCY_CONFLICT',
        field: 'idempotency-key',
        detail: expect.stringContaining('Idempotency-Key "order-1001" was already used'),
      });
      expect(r.json().detail).toMatch(/nothing was accepted/);
    }
    expect(await waiting()).toBe(before);
    expect((await queues.events.getJob(a.json().batchId))?.data).toEqual(job?.data);
    // The key is per store: another store may use it for its own events.
    expect((await post([view('P9')], { headers, key: keys.other })).statusCode).toBe(202);
  });

  it('answers a retry with its batch though an event passed LATENESS_HORIZON_DAYS since the request was accepted, as all or nothing and partial', async () => {
    const horizon = 35 * 86_400_000;
    const near = () => view('P1', { ts: Date.now() - horizon + 1_500 });
    const whole = [near(), view('P2')];
    const part = [near(), view('P2'), view('P|3')];
    const before = await waiting();
    const a = await post(whole, { headers: { 'idempotency-key': 'late-retry-1' } });
    const b = await post(part, { headers: { 'idempotency-key': 'late-retry-2' }, query: '?partial=true' });
    expect([a.statusCode, b.statusCode]).toEqual([202, 202]);
    await sleep(2_000);
    // The answers were lost; the retries come once the first event is past the horizon: the first answers again.
    const a2 = await post(whole, { headers: { 'idempotency-key': 'late-retry-1' } });
    expect([a2.statusCode, a2.json()]).toEqual([202, a.json()]);
    const b2 = await post(part, { headers: { 'idempotency-key': 'late-retry-2' }, query: '?partial=true' });
    expect([b2.statusCode, b2.json()]).toEqual([202, b.json()]);
    expect(b2.json()).toMatchObject({ accepted: 2, rejected: 1, acceptedIndexes: [0, 1] });
    expect(await waiting()).toBe(before + 2);
    // A request never accepted with that event, or another one under the key: refused as before.
    expect((await post(whole, { headers: { 'idempotency-key': 'late-retry-3' } })).statusCode).toBe(400);
    expect((await post([whole[0], view('P9')], { headers: { 'idempotency-key': 'late-retry-1' } })).statusCode).toBe(400);
    expect(await waiting()).toBe(before + 2);
  });

  it('answers a retry as its first attempt whatever the time since: events refused for their ts then stay refused, none is added', async () => {
    const day = 86_400_000;
    const t0 = Date.now();
    const query = '?partial=true';
    const body = [
      view('PA', { ts: t0 - 35 * day + 600_000 }), // in time for 10 more minutes
      view('PB', { ts: t0 - 36 * day }), // past LATENESS_HORIZON_DAYS already
      view('PC', { ts: t0 + 330_000 }), // more than CLOCK_SKEW_SECONDS ahead (a sender's clock 5.5 minutes fast)
      view('PD'),
    ];
    const first = await post(body, { query, headers: { 'idempotency-key': 'ts-retry-1' } });
    expect(first.json()).toMatchObject({ accepted: 2, rejected: 2, acceptedIndexes: [0, 3] });
    // Refused only for PC: no event refused now (the SET finds the key bound to other events), one a minute later.
    const ahead = [view('PC', { ts: t0 + 330_000 }), view('PD')];
    const second = await post(ahead, { query, headers: { 'idempotency-key': 'ts-retry-2' } });
    expect(second.json()).toMatchObject({ accepted: 1, acceptedIndexes: [1] });
    // All or nothing, on a collector whose clock is a minute behind: the event is more than the skew ahead there.
    const whole = [view('PE', { ts: t0 + 270_000 }), view('PF')];
    const third = await post(whole, { headers: { 'idempotency-key': 'ts-retry-3' } });
    expect(third.statusCode).toBe(202);
    const before = await waiting();
    // The answers were lost; the retries come a minute later (PC is within the skew), an hour later (PA is past the
    // horizon too), and to the collector a minute behind. An answer 422 "use a new key" would have them counted twice.
    for (const [ms, retried, payload, opts] of [
      [60_000, first, body, { query, headers: { 'idempotency-key': 'ts-retry-1' } }],
      [3_600_000, first, body, { query, headers: { 'idempotency-key': 'ts-retry-1' } }],
      [60_000, second, ahead, { query, headers: { 'idempotency-key': 'ts-retry-2' } }],
      [-60_000, third, whole, { headers: { 'idempotency-key': 'ts-retry-3' } }],
    ] as const) {
      const r = await shifted(ms, () => post(payload, opts));
      expect([ms, r.statusCode, r.json()]).toEqual([ms, 202, retried.json()]);
    }
    expect(await waiting()).toBe(before);
    // Other events under a key are refused as before, whatever the time.
    const other = await shifted(60_000, () =>
      post([body[0], body[2], view('P9')], { query, headers: { 'idempotency-key': 'ts-retry-1' } }),
    );
    expect(other.statusCode).toBe(422);
    expect(await waiting()).toBe(before);
  });

  it('takes a partial request for a retry only with the same events refused: another under the key is 422, whatever the time', async () => {
    const t0 = Date.now();
    const query = '?partial=true';
    const headers = { 'idempotency-key': 'ts-other-1' };
    const PX = view('PX', { ts: t0 + 330_000 }); // more than CLOCK_SKEW_SECONDS ahead
    const PY = view('PY');
    const first = await post([PX, PY], { query, headers });
    expect(first.json()).toMatchObject({ accepted: 1, rejected: 1, acceptedIndexes: [1] });
    const before = await waiting();
    // PY and another event PZ: at once (PZ refused as PX was) and a minute later (PZ within the skew, not at t0).
    const PZ = view('PZ', { ts: t0 + 331_000 });
    for (const ms of [0, 60_000]) {
      const r = await shifted(ms, () => post([PY, PZ], { query, headers }));
      expect([ms, r.statusCode, r.json().code]).toEqual([ms, 422, 'TALLY_ERR_IDEMPOTENCY_CONFLICT']);
    }
    // The first request again a minute later (PX within the skew now): answered as it was.
    const again = await shifted(60_000, () => post([PX, PY], { query, headers }));
    expect([again.statusCode, again.json()]).toEqual([202, first.json()]);
    expect(await waiting()).toBe(before);
  });

  it('binds a key to the values of its events, not their spelling: 0.1 and "0.10", 100 and "1e2" are one batch', async () => {
    const ts = Date.now() - 60_000;
    const order = (value: number | string) => [{ type: 'order', ts, value, dims: { visitor: 'V1' } }];
    for (const [key, spellings] of [
      ['spelt-1', [0.1, '0.10', '1e-1']],
      ['spelt-2', [100, '1e2', '100.00']],
    ] as const) {
      const first = await post(order(spellings[0]), { headers: { 'idempotency-key': key } });
      const before = await waiting();
      for (const value of spellings.slice(1)) {
        const r = await post(order(value), { headers: { 'idempotency-key': key } });
        expect([value, r.statusCode, r.json()]).toEqual([value, 202, first.json()]);
      }
      expect(await waiting()).toBe(before);
    }
  });

  it('takes the events of a store whose zone is an offset of no whole quarter hours (set before such offsets were refused)', async () => {
    await admin.createTenant('LEGACY1', { timeZone: 'UTC' });
    // As a tenant written by a version that did not refuse +05:37 yet (createTenant refuses it now).
    await adminDynamo.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { pk: { S: '_tenant#LEGACY1' }, sk: { S: 'META' } },
        UpdateExpression: 'SET #z = :z',
        ExpressionAttributeNames: { '#z': 'timeZone' },
        ExpressionAttributeValues: { ':z': { S: '+05:37' } },
      }),
    );
    const legacy = await admin.issueKey('LEGACY1', ['ingest'], 'web');
    const r = await post([view('P1')], { key: legacy });
    expect([r.statusCode, r.json()]).toEqual([202, expect.objectContaining({ accepted: 1 })]);
    const job = eventsJobSchema.parse((await queues.events.getJob(r.json().batchId))?.data);
    expect([job.store, job.count, job.rows?.length]).toEqual(['LEGACY1', 1, expect.any(Number)]);
  });

  it('refuses a batch with no events (an empty array, or NDJSON with no lines) with a 400 problem naming the body, enqueuing nothing', async () => {
    const before = await waiting();
    for (const [payload, contentType] of [
      ['[]', 'application/json'],
      [' [ ] ', 'application/json'],
      ['\n\n', 'application/x-ndjson'],
    ] as const) {
      for (const query of ['', '?partial=true']) {
        const r = await post(payload, { contentType, query, headers: { 'idempotency-key': 'empty-1' } });
        expect(r.statusCode).toBe(400);
        expect(r.headers['content-type']).toBe('application/problem+json; charset=utf-8');
        expect(r.json()).toMatchObject({ status: 400, code: 'TALLY_ERR_MALFORMED_BODY', field: 'body' });
        expect(r.json().detail).toMatch(/must hold at least 1 event/);
        expect(r.json()).not.toHaveProperty('batchId');
      }
    }
    expect(await waiting()).toBe(before);
  });
});

describe('start', () => {
  it('builds the app without a process warning (no Fastify deprecation to learn to ignore)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const extra = await buildApp(res.deps);
      await extra.ready();
      await extra.close();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });
});

describe('bad input gets the right 4xx naming the problem, and the collector keeps serving', () => {
  const expectProblem = (r: Awaited<ReturnType<typeof post>>, status: number, code: string, message: RegExp) => {
    expect(r.statusCode).toBe(status);
    expect(r.json()).toMatchObject({ status: status, code });
    expect(r.json().detail).toMatch(message);
  };

  it('malformed JSON, empty bodies, non-arrays', async () => {
    expectProblem(await post('[{"type":"view",'), 400, 'TALLY_ERR_MALFORMED_BODY', /^the body is not valid JSON/);
    expectProblem(await post('[{"type":"view","value":NaN}]'), 400, 'TALLY_ERR_MALFORMED_BODY', /not valid JSON/);
    expectProblem(await post(''), 400, 'TALLY_ERR_MALFORMED_BODY', /empty/);
    expectProblem(await post(view()), 400, 'TALLY_ERR_MALFORMED_BODY', /must be a JSON array of events, got an object/);
  });

  it('wrong content types get 415', async () => {
    expectProblem(
      await post('type=view', { contentType: 'text/plain' }),
      415,
      'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE',
      /application\/json.*application\/x-ndjson/,
    );
    expectProblem(await post('<e/>', { contentType: 'application/xml' }), 415, 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE', /Content-Type must be/);
  });

  it('a 10 MB body and a 100,000-element array get 413 naming the limit', async () => {
    const ev = JSON.stringify(view());
    const big = `[${Array.from({ length: Math.ceil(10_000_000 / ev.length) }, () => ev).join(',')}]`;
    expect(big.length).toBeGreaterThan(10_000_000);
    const r = await post(big);
    expectProblem(r, 413, 'TALLY_ERR_BODY_TOO_LARGE', /MAX_BODY_BYTES \(1048576 bytes\)/);
    expect(r.json().limit).toBe(1_048_576);
    const many = await post(JSON.stringify(Array(100_000).fill(0)));
    expectProblem(many, 413, 'TALLY_ERR_TOO_MANY_EVENTS', /has 100000 events; MAX_EVENTS_PER_REQUEST is 1000/);
    const nd = await post('{}\n'.repeat(1_001), { contentType: 'application/x-ndjson' });
    expectProblem(nd, 413, 'TALLY_ERR_TOO_MANY_EVENTS', /has 1001 events/);
  });

  it('deep nesting', async () => {
    const deepArray = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const r1 = await post(`[${deepArray}]`);
    expect(r1.statusCode).toBe(400);
    expect(r1.json().errors).toEqual([{ index: 0, field: '(event)', reason: 'must be a JSON object' }]);
    const deepObject = `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`;
    const r2 = await post(`[{"type":"view","ts":"${iso()}","dims":{"product":${deepObject}}}]`);
    expect(r2.statusCode).toBe(400);
    expect(r2.json().errors[0].field).toBe('dims.product');
  });

  it('__proto__ and constructor keys are refused by name and pollute nothing', async () => {
    const r = await post(
      `[{"type":"view","ts":"${iso()}","dims":{"product":"P1"},"__proto__":{"polluted":true}},` +
        `{"type":"view","ts":"${iso()}","dims":{"product":"P1","__proto__":"x"}},` +
        `{"type":"view","ts":"${iso()}","dims":{"product":"P1"},"constructor":{"prototype":{"polluted":true}}}]`,
    );
    expect(r.statusCode).toBe(400);
    expect(r.json().errors.map((e: { field: string }) => e.field)).toEqual(['__proto__', 'dims.__proto__', 'constructor']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('NUL bytes and emoji in ids', async () => {
    const r = await post([view('P\u0000'), view('😀'), view('P1', { id: 'id-😀' }), view('P1', { id: 'a\u0000b' })]);
    expect(r.statusCode).toBe(400);
    expect(r.json().errors.map((e: { index: number; field: string }) => `${e.index}:${e.field}`)).toEqual([
      '0:dims.product',
      '1:dims.product',
      '2:id',
      '3:id',
    ]);
  });

  it('# [ ] | are refused in dims; . and : are legal and travel only as values', async () => {
    const refused = await post(['P#1', 'a[0]', 'a]', 'P|1'].map((p) => view(p)));
    expect(refused.statusCode).toBe(400);
    expect(refused.json().errors.map((e: { index: number }) => e.index)).toEqual([0, 1, 2, 3]);
    const ok = await post([view('cat.shoes:42')]);
    expect(ok.statusCode).toBe(202);
    const job = await queues.events.getJob(ok.json().batchId);
    expect(job?.id).toBe(ok.json().batchId);
    expect(job?.id).not.toContain(':');
    expect(sumOfJobRows(job?.data.rows, 'SHOP1#product#cat.shoes:42', 'v')).toBe(1n);
    expect(sumOfJobRows(job?.data.rows, 'SHOP1#visitor#V1', 'pv#cat.shoes:42')).toBe(1n);
  });

  it('negative, NaN, Infinity and 1e309 values', async () => {
    const order = (value: unknown) => ({ type: 'order', ts: iso(), value });
    const r = await post(
      `[${[-5, '"NaN"', '"Infinity"', '1e309', '"1e309"', '1.234'].map((v) => `{"type":"order","ts":"${iso()}","value":${v}}`).join(',')}]`,
    );
    expect(r.statusCode).toBe(400);
    expect(r.json().errors.map((e: { field: string; reason: string }) => `${e.field}: ${e.reason}`)).toEqual([
      'value: must not be negative',
      'value: must be a decimal number',
      'value: must be a decimal number',
      'value: must be a finite number or a decimal string of at most 64 characters',
      'value: must be at most 1000000000000',
      'value: has more than 2 decimal places',
    ]);
    expect((await post([order(0.5), order('12.30')])).statusCode).toBe(202);
  });

  it('timestamps far in the past and the future', async () => {
    const r = await post([
      view('P1', { ts: '1970-01-01T00:00:00Z' }),
      view('P1', { ts: Date.now() - 36 * 86_400_000 }),
      view('P1', { ts: new Date(Date.now() + 3_600_000).toISOString() }),
      view('P1', { ts: '9999-12-31T23:59:59Z' }),
      view('P1', { ts: 1e300 }),
    ]);
    expect(r.statusCode).toBe(400);
    expect(r.json().errors.map((e: { index: number; field: string; reason: string }) => `${e.index}:${e.field}: ${e.reason}`)).toEqual([
      '0:ts: is older than the lateness horizon of 35 days',
      '1:ts: is older than the lateness horizon of 35 days',
      '2:ts: is more than 300s in the future',
      '3:ts: is more than 300s in the future',
      expect.stringMatching(/^4:ts: must be an ISO-8601/),
    ]);
  });

  it('still serves after all that', async () => {
    expect((await post([view()])).statusCode).toBe(202);
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

describe('auth', () => {
  it('401 without Authorization, with a malformed one or an unknown key; 403 for a read-only key', async () => {
    const none = await post([view()], { key: null });
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="tally"');
    expect(none.json()).toMatchObject({
      code: 'TALLY_ERR_UNAUTHORIZED',
      detail: 'missing Authorization header: send Authorization: Bearer <API key with the "ingest" scope>',
    });
    const basic = await app.inject({
      method: 'POST',
      url: '/v1/events',
      headers: { authorization: 'Basic dXNlcjpwYXNz', 'content-type': 'application/json' },
      payload: '[]',
    });
    expect(basic.json().detail).toBe('the Authorization header must be "Bearer <API key>"');
    const unknown = await post([view()], { key: 'tly_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' });
    expect([unknown.statusCode, unknown.json().detail]).toEqual([401, 'unknown or revoked API key']);
    const read = await post([view()], { key: keys.read });
    expect(read.statusCode).toBe(403);
    expect(read.json()).toMatchObject({ code: 'TALLY_ERR_FORBIDDEN', detail: 'this API key lacks the "ingest" scope (it has: read)' });
  });

  it('checks the key before reading the body', async () => {
    const ev = JSON.stringify(view());
    const big = `[${Array.from({ length: Math.ceil(2_000_000 / ev.length) }, () => ev).join(',')}]`;
    expect((await post(big, { key: null })).statusCode).toBe(401);
  });

  it('a revoked key stops working within KEY_CACHE_TTL_MS', async () => {
    expect((await post([view()], { key: keys.revoked })).statusCode).toBe(202);
    await admin.revokeKey('SHOP1', keyIdOf(keys.revoked));
    const revokedAt = Date.now();
    const r = await waitFor(
      async () => {
        const x = await post([view()], { key: keys.revoked });
        return x.statusCode === 401 && x;
      },
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    expect(Date.now() - revokedAt).toBeLessThan(TTL_MS + 300);
    expect(r.json().detail).toBe('unknown or revoked API key');
  });
});

describe('backpressure and outages', () => {
  it('made-up keys are looked up within UNKNOWN_KEY_LOOKUPS_PER_SECOND, then answered 503 without a lookup; known keys pass', async () => {
    const budget = await startCollector({ UNKNOWN_KEY_LOOKUPS_PER_SECOND: '1' }); // a bucket of 10 lookups
    const throttled = async () => {
      const text = (await budget.app.inject({ method: 'GET', url: '/metrics' })).body;
      const line = text.split('\n').find((l) => l.startsWith('tally_key_lookups_throttled_total'));
      return Number(line?.slice(line.lastIndexOf(' ') + 1));
    };
    try {
      // The real key first: cached as existing, it is never refused.
      expect((await post([view()], {}, budget.app)).statusCode).toBe(202);
      const made = (i: number) => `tly_${String(i).padStart(43, 'x')}`;
      const codes: number[] = [];
      for (let i = 0; i < 15; i++) codes.push((await post([view()], { key: made(i) }, budget.app)).statusCode);
      // 9 lookups left in the bucket (the real key took one): 401 each, then 503 with no lookup.
      expect(codes).toEqual([...Array(9).fill(401), ...Array(6).fill(503)]);
      expect(await throttled()).toBe(6);
      expect((await post([view()], {}, budget.app)).statusCode).toBe(202);
    } finally {
      await budget.app.close();
      await closeCollectorDeps(budget.res);
    }
  });

  it('429 with Retry-After while the events queue is deeper than MAX_QUEUE_DEPTH', async () => {
    const small = await startCollector({ MAX_QUEUE_DEPTH: '1' });
    const refused = async () => {
      const text = (await small.app.inject({ method: 'GET', url: '/metrics' })).body;
      const line = text.split('\n').find((l) => l.startsWith('tally_collector_backpressure_total{'));
      return Number(line?.slice(line.lastIndexOf(' ') + 1));
    };
    try {
      expect(await refused()).toBe(0);
      await queues.events.drain();
      await small.res.backpressure.sample();
      expect((await post([view()], {}, small.app)).statusCode).toBe(202);
      expect((await post([view()], {}, small.app)).statusCode).toBe(202);
      await small.res.backpressure.sample();
      const before = await waiting();
      const r = await post([view()], {}, small.app);
      expect(r.statusCode).toBe(429);
      expect(r.headers['retry-after']).toBe('2');
      expect(r.json()).toMatchObject({ code: 'TALLY_ERR_BACKPRESSURE', limit: 1 });
      expect(r.json().detail).toMatch(/over MAX_QUEUE_DEPTH \(1\); nothing was accepted/);
      expect(await waiting()).toBe(before);
      expect(await refused()).toBe(1); // the throttling alert's signal
      await queues.events.drain();
      await waitFor(async () => (await post([view()], {}, small.app)).statusCode === 202, { timeoutMs: 5_000 });
    } finally {
      await small.app.close();
      await closeCollectorDeps(small.res);
    }
  });

  it('reports the counters on /metrics', async () => {
    const accepted = async () => {
      const line = (await app.inject({ method: 'GET', url: '/metrics' })).body
        .split('\n')
        .find((l) => l.startsWith('tally_events_accepted_total{'));
      return Number(line?.slice(line.lastIndexOf(' ') + 1) ?? 0);
    };
    const before = await accepted();
    expect((await post([view(), view(), view()])).statusCode).toBe(202);
    expect((await accepted()) - before).toBe(3);
    const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    /** The value of the series `name` whose labels include `labels` (label order is prom-client's business). */
    const value = (name: string, labels: Record<string, string> = {}) => {
      const want = Object.entries({ app: 'collector', ...labels }).map(([k, v]) => `${k}="${v}"`);
      const line = text.split('\n').find((l) => {
        const m = /^([a-z_]+)\{(.*)\} /.exec(l);
        return m?.[1] === name && want.every((w) => m[2]!.split(',').includes(w));
      });
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    expect(value('tally_events_received_total')).toBeGreaterThan(100_000);
    expect(value('tally_events_rejected_total', { reason: 'dims' })).toBeGreaterThanOrEqual(8);
    expect(value('tally_events_rejected_total', { reason: 'too_many_events' })).toBe(100_000 + 1_001);
    expect(value('tally_http_request_duration_seconds_count', { route: '/v1/events', method: 'POST', status_code: '202' })).toBeGreaterThan(
      5,
    );
    expect(value('tally_http_request_duration_seconds_count', { route: '/v1/events', method: 'POST', status_code: '413' })).toBe(3);
    expect(value('tally_queue_jobs', { queue: 'events', state: 'waiting' })).toBeGreaterThanOrEqual(0);
    expect(text).not.toContain(keys.ingest);
  });

  it('serves /openapi.json with the all-or-nothing decision in the route description', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const op = doc.paths['/v1/events'].post;
    expect(op.description).toMatch(/All or nothing by default/);
    expect(op.description).toMatch(/With `\?partial=true`/);
    expect(op.description).toMatch(/at least 1 event: a batch with none .* is refused with 400/);
    expect(op.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['partial', 'idempotency-key']));
  });

  it('serves a valid OpenAPI 3.1 document with the event and batch schemas from zod, examples, every error and an operation id', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(await openApi31Errors(doc)).toEqual([]);
    const op = doc.paths['/v1/events'].post;
    expect(op.operationId).toBe('sendEvents');
    expect(Object.keys(op.requestBody.content).sort()).toEqual(['application/json', 'application/x-ndjson']);
    const batch = op.requestBody.content['application/json'].schema;
    expect(batch).toMatchObject({ type: 'array', minItems: 1 });
    expect(batch.items.required).toEqual(['type', 'ts']);
    expect(Object.keys(batch.items.properties).sort()).toEqual(['dims', 'id', 'ts', 'type', 'value']);
    expect(batch.items.additionalProperties).toBe(false);
    const example = op.requestBody.content['application/json'].example;
    expect(example[0]).toMatchObject({ type: 'view', dims: { product: 'P1' } });
    expect(example).toHaveLength(2);
    // Every example is accepted by the schema the intake parses events with.
    for (const event of example) expect(eventInputSchema.safeParse(event).success).toBe(true);
    expect(Object.keys(op.responses).sort()).toEqual([
      '202',
      '400',
      '401',
      '403',
      '404',
      '405',
      '408',
      '413',
      '415',
      '417',
      '422',
      '429',
      '431',
      '500',
      '503',
    ]);
    expect(op.responses['400'].content['application/json'].schema.properties.errors.items.required).toEqual(['index', 'field', 'reason']);
    expect(op.responses['202'].content['application/json'].example).toMatchObject({ accepted: 2 });
    expect(op.responses['401'].content['application/json'].example).toMatchObject({ code: 'TALLY_ERR_UNAUTHORIZED' });
    // The members some problems add are named: a client can read them from the document, not from prose.
    const members = (status: string) => Object.keys(op.responses[status].content['application/json'].schema.properties);
    expect(members('413')).toEqual(expect.arrayContaining(['code', 'detail', 'limit', 'count']));
    expect(members('429')).toEqual(expect.arrayContaining(['code', 'eventsPerSecond', 'burst', 'depth', 'limit']));
    expect(members('503')).toEqual(expect.arrayContaining(['code', 'detail', 'idempotencyKey']));
    expect(Object.values(op.responses).every((r) => typeof (r as { description?: unknown }).description === 'string')).toBe(true);
  });

  it('answers 503 at once, not after a command timeout, while Redis is frozen', async () => {
    await redis.kill('SIGSTOP');
    try {
      await waitFor(async () => (await post([view()])).statusCode === 503, { timeoutMs: 10_000, message: '503 while Redis is frozen' });
      const started = Date.now();
      const r = await post([view()]);
      expect([r.statusCode, r.headers['retry-after']]).toEqual([503, '5']);
      expect(Date.now() - started).toBeLessThan(500);
    } finally {
      await redis.kill('SIGCONT');
    }
    await waitFor(async () => (await post([view()])).statusCode === 202, { timeoutMs: 15_000, message: '202 after Redis thawed' });
  });

  it('a batch Redis took without answering in time: the 503 names the key the request was given, and a retry under it counts once', async () => {
    // The depth gate would answer 503 at once for a frozen Redis; stopped here, so the batch goes on to the queue.
    res.backpressure.stop();
    const before = await waiting();
    const body = [view(), view()];
    let r;
    try {
      await redis.kill('SIGSTOP');
      r = await post(body); // the add is sent, then times out (the producer's 5 s command timeout)
    } finally {
      await redis.kill('SIGCONT'); // Redis runs the add it had been sent
      res.backpressure.start();
    }
    expect([r.statusCode, r.json().code]).toEqual([503, 'TALLY_ERR_UNAVAILABLE']);
    const key = r.json().idempotencyKey as string;
    expect(key).toMatch(/^auto-[\w-]{22}$/);
    expect(r.json().detail).toContain(`Idempotency-Key: ${key}`);
    await waitFor(async () => (await waiting()) === before + 1, { timeoutMs: 5_000, message: 'the frozen add applied once Redis thawed' });
    // The key is bound to the events it was given for: other events under it are refused, not deduped away.
    const other = await post([...body, view('P9')], { headers: { 'idempotency-key': key } });
    expect([other.statusCode, other.json().code]).toEqual([422, 'TALLY_ERR_IDEMPOTENCY_CONFLICT']);
    const retried = await post(body, { headers: { 'idempotency-key': key } });
    expect(retried.statusCode).toBe(202);
    expect(await waiting()).toBe(before + 1); // the same job: the batch counts once
    expect(await queues.events.getJob(retried.json().batchId)).toBeDefined();
  }, 30_000);

  it("a 503 for Redis replicas behind names the code and the key to retry with, never the wait's own error, which is logged", async () => {
    // What a failed wait can say: Redis servers (host:port, run ids) and Redis' own error text.
    const internal =
      'the wait for Redis replicas to acknowledge batch b1 failed: READONLY You cannot write against a read only replica (10.1.2.3:6380 run id 5f1c0ffee)';
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    // The intake as the collector's, but every enqueue ends in that error (with the key the batch was given, if any).
    const behind = Object.create(res.deps.intake) as Intake;
    behind.enqueue = async (_store, _events, opts) => {
      const err = new ReplicasBehindError(internal);
      err.idempotencyKey = opts?.idempotencyKey ?? 'auto-0123456789abcdefghijkl';
      throw err;
    };
    const log = createLogger({ name: 'collector-test', level: 'info', destination });
    const a = await buildApp({ ...res.deps, intake: behind, log });
    try {
      const keyed = await post([view()], { headers: { 'idempotency-key': 'k-behind' } }, a);
      expect([keyed.statusCode, keyed.headers['retry-after'], keyed.json().code]).toEqual([503, '5', 'TALLY_ERR_REDIS_REPLICAS_BEHIND']);
      expect(keyed.json().detail).toMatch(/retry later with the same Idempotency-Key, which counts it once either way$/);
      const keyless = await post([view()], {}, a);
      expect(keyless.json()).toMatchObject({ code: 'TALLY_ERR_REDIS_REPLICAS_BEHIND', idempotencyKey: 'auto-0123456789abcdefghijkl' });
      expect(keyless.json().detail).toContain('Idempotency-Key: auto-0123456789abcdefghijkl');
      for (const r of [keyed, keyless]) {
        expect(r.body).not.toContain('10.1.2.3');
        expect(r.body).not.toContain('5f1c0ffee');
        expect(r.body).not.toContain('READONLY');
      }
      // The operator still sees it all, in the log.
      const warned = lines.flatMap((l) => l.split('\n').filter(Boolean)).map((l) => JSON.parse(l) as { code?: string; cause?: string });
      expect(warned).toContainEqual(expect.objectContaining({ code: 'TALLY_ERR_REDIS_REPLICAS_BEHIND', cause: internal }));
    } finally {
      await a.close();
    }
  });

  it('503 with Retry-After while Redis is down, /readyz not ready; both recover', async () => {
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    await redis.kill('SIGKILL');
    try {
      const r = await waitFor(
        async () => {
          const x = await post([view()]);
          return x.statusCode === 503 && x;
        },
        { timeoutMs: 5_000 },
      );
      expect(r.headers['retry-after']).toBe('5');
      expect(r.json()).toMatchObject({ code: 'TALLY_ERR_UNAVAILABLE' });
      expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await redis.restart();
    }
    // Ready again means taking events again: a load balancer that sends traffic on the first 200 gets no 503.
    await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, {
      timeoutMs: 15_000,
      intervalMs: 10,
      message: '/readyz ready after the Redis restart',
    });
    expect((await post([view()])).statusCode).toBe(202);
  });

  it('/readyz agrees with /v1/events: not ready while the events queue has not been read since Redis came back', async () => {
    // The depth is read by a timer; stopped here, so the moment between Redis's return and the next read lasts.
    res.backpressure.stop();
    try {
      await redis.kill('SIGKILL');
      await res.backpressure.sample(); // fails: Redis is down
      await redis.restart();
      await waitFor(() => res.redis.status === 'ready', { timeoutMs: 15_000, message: 'the producer connection ready again' });
      expect((await post([view()])).statusCode).toBe(503);
      expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      await res.backpressure.sample();
      expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
      expect((await post([view()])).statusCode).toBe(202);
    } finally {
      res.backpressure.start();
    }
  });

  it('while DynamoDB is down, known keys keep working and an unknown key gets 503', async () => {
    expect((await post([view()], { key: keys.other })).statusCode).toBe(202);
    await dynalite.stop();
    await new Promise((r) => setTimeout(r, TTL_MS + 50));
    expect((await post([view()], { key: keys.ingest })).statusCode).toBe(202);
    expect((await post([view()], { key: keys.other })).statusCode).toBe(202);
    const r = await post([view()], { key: keys.unseen });
    expect(r.statusCode).toBe(503);
    expect(r.headers['retry-after']).toBe('5');
    expect(r.json().detail).toMatch(/cannot be checked right now/);
  });

  it('503 on /v1/events once shutdown began', async () => {
    res.beginClosing();
    const r = await post([view()]);
    expect([r.statusCode, r.headers['retry-after'], r.json().code]).toEqual([503, '1', 'TALLY_ERR_SHUTTING_DOWN']);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
  });
});
