import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { Writable } from 'node:stream';
import { BucketEraser, BucketStore } from '@tally/buckets';
import { keyInfoSchema, storeDeletionSchema, tenantSchema, VISITOR_ID_PATTERN, visitorErasureSchema } from '@tally/contracts';
import { createDynamoMeter } from '@tally/dynamo';
import { PROBLEM_SCHEMA } from '@tally/http';
import { createLogger } from '@tally/observability';
import { HistoryMemo } from '@tally/query';
import {
  closeQueues,
  createQueues,
  MAX_QUEUE_SHARDS,
  QUEUE,
  QUEUE_NAMES,
  queuePrefix,
  queueShards,
  shardCount,
  type TallyQueues,
} from '@tally/queues';
import { ID_PATTERN, keptForWindow, redisKeys, sharesInternalHashTag, STORE_ID_PATTERN } from '@tally/key-layout';
import { createTenant, deleteStore, getTenant, issueKey } from '@tally/tenants';
import { compileRules, defaultRules, rollup } from '@tally/schema';
import { openApi31Errors } from '@tally/testing';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, order, times, useFixture, view } from '../test/fixture';
import type { AdminDeps } from './admin.route';
import type { QueryApiApp } from './app';

// The admin API's contract: every route in the OpenAPI document, the one problem format for every refusal, an
// audit line per call that never holds a key, and the operations themselves through HTTP.

const OPERATOR = 'op_'.padEnd(40, 'x');
const f = useFixture();
let queues: TallyQueues;
let app: QueryApiApp;
let off: QueryApiApp;
let admin: string;
let keys: { read: string; ingest: string; both: string };
const logged: string[] = [];

function adminDeps(operatorToken: string | undefined): AdminDeps {
  return {
    db: f.db,
    erasure: {
      eraser: new BucketEraser({ redis: f.redis, buckets: f.buckets }),
      queues: [...queueShards(queues, QUEUE.events), ...queueShards(queues, QUEUE.dynamoWrites)],
      tombstoneSeconds: 3_600,
      activeJobsTimeoutMs: 2_000,
    },
    maintenance: queues,
    operatorToken,
  };
}

beforeAll(async () => {
  queues = createQueues(f.redis, { keyPrefix: 'q', shards: 1 });
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logged.push(String(chunk));
      cb();
    },
  });
  app = await f.app({ admin: adminDeps(OPERATOR), log: createLogger({ name: 'query-api-test', level: 'info', destination }) });
  off = await f.app({ admin: adminDeps(undefined) });
  keys = await f.tenant('SHOP_A', 'Europe/Berlin');
});
afterAll(async () => {
  await closeQueues(queues);
});

const call = (a: QueryApiApp, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, key?: string, payload?: unknown) =>
  a.inject({ method, url, headers: key ? bearer(key) : {}, ...(payload !== undefined ? { payload: payload as object } : {}) });
const op = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) => call(app, method, url, OPERATOR, payload);

function expectProblem(r: LightMyRequestResponse, status: number, field?: string) {
  expect({ status: r.statusCode, type: r.headers['content-type'] }).toEqual({ status, type: 'application/problem+json; charset=utf-8' });
  const body = PROBLEM_SCHEMA.parse(r.json());
  if (field !== undefined) expect(body.field).toBe(field);
  return body;
}

describe('the operator routes', () => {
  it('create, list and show stores; the first admin key works', async () => {
    const created = await op('POST', '/v1/operator/stores', {
      store: 'SHOP_NEW',
      timeZone: 'Europe/Paris',
      currency: 'EUR',
      historyMonths: 13,
      adminKey: true,
    });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ store: 'SHOP_NEW', timeZone: 'Europe/Paris', currency: 'EUR', historyMonths: 13 });
    admin = created.json().adminKey;
    expect(admin).toMatch(/^tly_/);
    expect((await call(app, 'GET', '/v1/admin/store', admin)).json()).toMatchObject({ store: 'SHOP_NEW' });
    const list = await op('GET', '/v1/operator/stores');
    expect(list.json().stores.map((s: { store: string }) => s.store)).toEqual(['SHOP_A', 'SHOP_NEW']);
    list.json().stores.forEach((s: unknown) => tenantSchema.parse(s));
    expect(list.json().next).toBeUndefined();
    // A page at a time: `next` names where the following page starts.
    const first = (await op('GET', '/v1/operator/stores?limit=1')).json();
    expect(first).toMatchObject({ stores: [{ store: 'SHOP_A' }], next: 'SHOP_A' });
    const second = (await op('GET', `/v1/operator/stores?limit=1&after=${first.next}`)).json();
    expect(second.stores.map((s: { store: string }) => s.store)).toEqual(['SHOP_NEW']);
    expect(expectProblem(await op('GET', '/v1/operator/stores?limit=0'), 400, 'limit').detail).toMatch(/at least 1/);
    expect(expectProblem(await op('GET', '/v1/operator/stores?limit=1001'), 400, 'limit').detail).toMatch(/at most 1000/);
    expect(expectProblem(await op('GET', '/v1/operator/stores?limit=1e3'), 400, 'limit').detail).toBe(
      'limit: must be a whole number from 1 to 1000, in decimal digits, got "1e3"',
    );
    expect(expectProblem(await op('GET', '/v1/operator/stores?limit=99999999999999999999'), 400, 'limit').detail).toBe(
      'limit: must be at most 1000, got "99999999999999999999"',
    );
    expect((await op('GET', '/v1/operator/stores/SHOP_A')).json()).toMatchObject({ store: 'SHOP_A', timeZone: 'Europe/Berlin' });
  });

  it("set a store's ingest budget and settings; null returns it to the default; a store's own admin key cannot", async () => {
    const patched = await op('PATCH', '/v1/operator/stores/SHOP_A', { ingestEventsPerSecond: 5_000, currency: 'USD' });
    expect({ status: patched.statusCode, body: patched.json() }).toMatchObject({
      status: 200,
      body: { store: 'SHOP_A', ingestEventsPerSecond: 5_000, currency: 'USD' },
    });
    tenantSchema.parse(patched.json());
    expect((await op('GET', '/v1/operator/stores/SHOP_A')).json()).toMatchObject({ ingestEventsPerSecond: 5_000 });
    expect((await op('GET', '/v1/operator/stores')).json().stores[0]).toMatchObject({ store: 'SHOP_A', ingestEventsPerSecond: 5_000 });
    // The collectors read it with the key: the tenant directory gives it to the principal.
    expect((await getTenant(f.db, 'SHOP_A'))?.ingestEventsPerSecond).toBe(5_000);
    expect((await op('PATCH', '/v1/operator/stores/SHOP_A', { ingestEventsPerSecond: null })).json().ingestEventsPerSecond).toBeUndefined();
    expectProblem(await op('PATCH', '/v1/operator/stores/SHOP_A', { ingestEventsPerSecond: 0 }), 400, 'ingestEventsPerSecond');
    expectProblem(await op('PATCH', '/v1/operator/stores/SHOP_A', { ingestEventsPerSecond: 10_000_001 }), 400, 'ingestEventsPerSecond');
    expectProblem(await op('PATCH', '/v1/operator/stores/NOPE', { ingestEventsPerSecond: 10 }), 404);
    // A store's admin changes its own settings, never its budget.
    expectProblem(await call(app, 'PATCH', '/v1/admin/store', admin, { ingestEventsPerSecond: 1_000_000 }), 400);
  });

  it('refuse: 404 unknown store, 409 an existing one, 400 a bad id or zone', async () => {
    expect(expectProblem(await op('GET', '/v1/operator/stores/NOPE'), 404).code).toBe('TALLY_ERR_NOT_FOUND');
    expect(expectProblem(await op('DELETE', '/v1/operator/stores/NOPE'), 404).code).toBe('TALLY_ERR_NOT_FOUND');
    expect(expectProblem(await op('POST', '/v1/operator/stores', { store: 'SHOP_A' }), 409, 'store').code).toBe('TALLY_ERR_CONFLICT');
    expectProblem(await op('POST', '/v1/operator/stores', { store: '-bad' }), 400, 'store');
    expectProblem(await op('POST', '/v1/operator/stores', { store: 'SHOP_Z', timeZone: 'Mars/Olympus' }), 400, 'timeZone');
    // A bad setting leaves no store behind: the same request, corrected, creates it (not 409).
    expectProblem(await op('POST', '/v1/operator/stores', { store: 'SHOP_Z', currency: 'euro' }), 400, 'currency');
    expectProblem(await op('POST', '/v1/operator/stores', { store: 'SHOP_Z', historyMonths: 1201 }), 400, 'historyMonths');
    expect((await op('GET', '/v1/operator/stores/SHOP_Z')).statusCode).toBe(404);
    const created = await op('POST', '/v1/operator/stores', { store: 'SHOP_Z', currency: 'EUR', historyMonths: 1200 });
    expect({ status: created.statusCode, body: created.json() }).toMatchObject({
      status: 201,
      body: { currency: 'EUR', historyMonths: 1200 },
    });
    expect((await op('GET', '/v1/operator/stores/SHOP_Z')).json()).toMatchObject({ currency: 'EUR', historyMonths: 1200 });
  });

  it("refuses (400) a new store whose id can be the hash tag of the installation's own Redis keys, under any KEY_PREFIX", async () => {
    // Store t:w0's keys t:{t:w0}:… are work-set shard 0's under KEY_PREFIX t: deleting it would delete that work set.
    for (const store of ['t:w0', 'q:w255', 't:events:0', 'abc:dynamo-writes:3', 't:seal', 'lg:maintenance']) {
      const refused = expectProblem(await op('POST', '/v1/operator/stores', { store }), 400, 'store');
      expect(refused).toMatchObject({ code: 'TALLY_ERR_BAD_REQUEST' });
      expect(refused.detail).toContain(`store id ${JSON.stringify(store)} cannot be taken by a new store`);
      expect(await getTenant(f.db, store)).toBeUndefined();
    }
    // Ids that merely hold a `:` are taken as before.
    for (const store of ['t:web', 'acme:w', 'acme:w1x', 'acme:eventsX', 'W0']) {
      expect((await op('POST', '/v1/operator/stores', { store })).statusCode, store).toBe(201);
    }
  });

  it('no store id a new store may take is a hash tag of the queues or the work sets, whatever KEY_PREFIX and QUEUE_SHARDS', () => {
    /** The hash tag of a key or BullMQ prefix: what is between its first `{` and the `}` after it. */
    const tagOf = (key: string) => /\{([^}]*)\}/.exec(key)![1]!;
    const tags: string[] = [];
    for (const keyPrefix of ['t', 'q', 'lg', 'z0123456789abcde']) {
      const layout = { keyPrefix, shards: MAX_QUEUE_SHARDS };
      for (const queue of QUEUE_NAMES) {
        for (let shard = 0; shard < shardCount(layout, queue); shard++) tags.push(tagOf(queuePrefix(layout, queue, shard)));
      }
      for (let shard = 0; shard < MAX_QUEUE_SHARDS; shard++) tags.push(tagOf(redisKeys(keyPrefix).work(shard)));
    }
    expect(tags).toContain('t:w0');
    expect(tags).toContain('t:events:0');
    // Every one is a well-formed store id (taken before), which createTenant now refuses (sharesInternalHashTag).
    expect(tags.filter((tag) => !STORE_ID_PATTERN.test(tag))).toEqual([]);
    expect(tags.filter((tag) => !sharesInternalHashTag(tag))).toEqual([]);
  });

  it('403 for a store key, even an admin one; 401 without or with a wrong credential; off (403) when no credential is configured', async () => {
    for (const key of [keys.read, keys.both, admin]) {
      expect(expectProblem(await call(app, 'GET', '/v1/operator/stores', key), 403, 'authorization').code).toBe('TALLY_ERR_FORBIDDEN');
    }
    expectProblem(await call(app, 'GET', '/v1/operator/stores'), 401, 'authorization');
    expectProblem(await call(app, 'GET', '/v1/operator/stores', 'op_'.padEnd(40, 'y')), 401, 'authorization');
    for (const key of [OPERATOR, admin, undefined]) {
      expect(expectProblem(await call(off, 'GET', '/v1/operator/stores', key), 403).detail).toMatch(/operator routes are off/);
    }
    expect((await call(off, 'POST', '/v1/operator/stores', OPERATOR, { store: 'SHOP_OFF' })).statusCode).toBe(403);
  });
});

describe("a store's admin routes", () => {
  it('list, issue and revoke keys; set time zone, currency and retention', async () => {
    const issued = await call(app, 'POST', '/v1/admin/keys', admin, { scopes: ['read'], label: 'dashboard' });
    expect(issued.statusCode).toBe(201);
    const { key, keyId } = issued.json();
    expect((await call(app, 'GET', '/v1/store', key)).json()).toMatchObject({ store: 'SHOP_NEW', timeZone: 'Europe/Paris' });
    const listed = (await call(app, 'GET', '/v1/admin/keys', admin)).json().keys;
    expect(listed.map((k: { label: string }) => k.label)).toEqual(['first admin key', 'dashboard']);
    listed.forEach((k: unknown) => keyInfoSchema.parse(k));
    expect(JSON.stringify(listed)).not.toContain(key);
    const revoked = await call(app, 'DELETE', `/v1/admin/keys/${keyId}`, admin);
    expect(revoked.json()).toMatchObject({ keyId, revoked: true });
    expectProblem(await call(app, 'GET', '/v1/store', key), 401);

    const patched = await call(app, 'PATCH', '/v1/admin/store', admin, {
      timeZone: 'America/New_York',
      currency: 'USD',
      historyMonths: null,
    });
    // From 13 months to for ever: the restamp of its visitor items is scheduled (restamp.int.test.ts), and the first
    // day those 13 months kept is the first of its visitors' history from now on (retention.int.test.ts).
    expect(patched.json()).toEqual({
      store: 'SHOP_NEW',
      timeZone: 'America/New_York',
      currency: 'USD',
      createdAt: expect.any(String),
      historyTrimmedBefore: expect.stringMatching(/^\d{4}-\d{2}-01$/),
      retentionRestampAt: expect.any(String),
    });
    expect((await call(app, 'GET', '/v1/admin/store', admin)).json()).toMatchObject({ timeZone: 'America/New_York' });
  });

  it('refuse: 404 an unknown key, 400 bad settings naming the field, 403 a key without the admin scope', async () => {
    expect(expectProblem(await call(app, 'DELETE', '/v1/admin/keys/abcdef123456', admin), 404).code).toBe('TALLY_ERR_NOT_FOUND');
    // A client library that sends Content-Type: application/json on every request: a route that takes no body
    // ignores an empty one (a 404 here, not a 400 for the body); one that takes a body says it is empty.
    const jsonHeaders = { ...bearer(admin), 'content-type': 'application/json' };
    const deleted = await app.inject({ method: 'DELETE', url: '/v1/admin/keys/abcdef123456', headers: jsonHeaders });
    expect(expectProblem(deleted, 404).code).toBe('TALLY_ERR_NOT_FOUND');
    const created = await app.inject({ method: 'POST', url: '/v1/admin/keys', headers: jsonHeaders });
    expect(expectProblem(created, 400, 'body').detail).toBe('the body is empty; send a JSON body');
    expectProblem(await call(app, 'PATCH', '/v1/admin/store', admin, { timeZone: 'Nowhere' }), 400, 'timeZone');
    expectProblem(await call(app, 'PATCH', '/v1/admin/store', admin, { currency: 'euro' }), 400, 'currency');
    expectProblem(await call(app, 'PATCH', '/v1/admin/store', admin, { historyMonths: 0 }), 400, 'historyMonths');
    expectProblem(await call(app, 'POST', '/v1/admin/keys', admin, { scopes: ['root'] }), 400, 'scopes.0');
    for (const key of [keys.read, keys.ingest, keys.both]) {
      expect(expectProblem(await call(app, 'GET', '/v1/admin/keys', key), 403, 'authorization').code).toBe('TALLY_ERR_FORBIDDEN');
      expectProblem(await call(app, 'DELETE', '/v1/visitors/V1', key), 403, 'authorization');
    }
    expectProblem(await call(app, 'GET', '/v1/admin/keys'), 401);
    // One store's admin key cannot reach another store's keys: the store comes from the key.
    const otherKeyId = (await call(app, 'GET', '/v1/admin/keys', admin)).json().keys[0].keyId;
    const adminA = (await op('POST', '/v1/operator/stores', { store: 'SHOP_A2', adminKey: true })).json().adminKey;
    expectProblem(await call(app, 'DELETE', `/v1/admin/keys/${otherKeyId}`, adminA), 404);
  });
});

describe('erasing a visitor', () => {
  it("removes the visitor's rows, counts still in Redis and cached history; the segment API then knows nothing of them; aggregates stay", async () => {
    const t = new Date(Date.now() - 60_000).toISOString();
    await f.apply('SHOP_A', 'Europe/Berlin', [view(t, 'P1', 'V1'), view(t, 'P1', 'V1'), order(t, '10.00', 'V1'), view(t, 'P1', 'V2')]);
    await f.flush('SHOP_A');
    await f.apply('SHOP_A', 'Europe/Berlin', [view(t, 'P2', 'V1')]); // still in the open bucket
    const segments = {
      visitor: 'V1',
      segments: [{ name: 'viewer', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>=', value: 1 }] }],
    };
    const evaluate = () => app.inject({ method: 'POST', url: '/v1/segments/evaluate', headers: bearer(keys.read), payload: segments });
    expect((await evaluate()).json().segments[0]).toMatchObject({ matched: true, rules: [{ actual: 3 }] });
    const storeViews = async () =>
      (await call(app, 'GET', '/v1/series?entity=store&range=allTime&granularity=total&metrics=ViewCount', keys.read)).json();
    const before = await storeViews();

    const otherStore = (await op('POST', '/v1/operator/stores', { store: 'SHOP_TMP', adminKey: true })).json().adminKey;
    expectProblem(await call(app, 'DELETE', '/v1/visitors/V1', otherStore), 404); // SHOP_TMP has no visitor V1: stores are isolated
    const adminA = await issueAdmin('SHOP_A');
    const r = await call(app, 'DELETE', '/v1/visitors/V1', adminA);
    expect(r.statusCode).toBe(200);
    const body = visitorErasureSchema.parse(r.json());
    expect(body).toMatchObject({ store: 'SHOP_A', visitor: 'V1', removed: { bucketEntries: 2, cachedHistory: true } }); // ViewCount and ProductViews#P2 of the open bucket
    expect(body.removed.dynamoItems).toBeGreaterThanOrEqual(2); // month item and TOTAL

    const after = (await evaluate()).json();
    expect(after.segments[0]).toMatchObject({ matched: false, rules: [{ actual: 0 }] });
    const items = await f.client.send(
      new ScanCommand({
        TableName: f.table,
        FilterExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': { S: 'SHOP_A#visitor#V1' } },
      }),
    );
    // Each item replaced by a tombstone item (no counters: a flush of before the erasure cannot re-create them).
    expect(items.Items!.length).toBeGreaterThanOrEqual(2);
    for (const it of items.Items!) expect(Object.keys(it).sort()).toEqual(['expiresAt', 'pk', 'sk', 'wm', 'wm.e']);
    // Events of the visitor in flight are dropped (the tombstone); other rows still count.
    await f.apply('SHOP_A', 'Europe/Berlin', [view(t, 'P1', 'V1')]);
    expect((await evaluate()).json().segments[0].rules[0].actual).toBe(0);
    expect((await storeViews()).points[0].values.ViewCount).toBe(before.points[0].values.ViewCount + 1);
    expect(expectProblem(await call(app, 'DELETE', '/v1/visitors/V1', adminA), 404).code).toBe('TALLY_ERR_NOT_FOUND');
    expect(expectProblem(await call(app, 'DELETE', '/v1/visitors/NEVER_SEEN', adminA), 404).code).toBe('TALLY_ERR_NOT_FOUND');
  });
});

describe('erasing a visitor of a rules file that ranks visitors', () => {
  it('takes them out of the top lists: no erased id is listed, nor keeps a visitor with counts out', async () => {
    const rules = compileRules({
      ...defaultRules,
      entities: { ...defaultRules.entities, visitor: { ...defaultRules.entities.visitor, rank: true } },
    });
    const buckets = new BucketStore({ redis: f.redis, rules, prefix: 'qh' });
    const store = 'SHOP_HT';
    const storeKeys = await f.tenant(store);
    const adminKey = await issueKey(f.db, store, ['admin'], 'admin');
    const t = new Date(Date.now() - 60_000).toISOString();
    // E1 and E2 viewed most; REAL viewed once.
    const events = [...times(9, () => view(t, 'P1', 'E1')), ...times(8, () => view(t, 'P1', 'E2')), view(t, 'P1', 'REAL')];
    await buckets.registerStore(store);
    expect(
      (await buckets.apply(store, 'h1', rollup(rules, store, 'UTC', events), { now: Date.now(), dedupeTtlSeconds: 3_600 })).applied,
    ).toBe(true);
    const deps = adminDeps(undefined);
    const ranked = await f.app({
      query: { buckets, dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() }, rules, historyMemo: new HistoryMemo() },
      admin: { ...deps, erasure: { ...deps.erasure, eraser: new BucketEraser({ redis: f.redis, buckets }) } },
    });
    const top = async (limit: number) =>
      (await call(ranked, 'GET', `/v1/top?entity=visitor&metric=ViewCount&range=last30d&limit=${limit}`, storeKeys.read)).json();
    expect((await top(3)).items.map((x: { id: string }) => x.id)).toEqual(['E1', 'E2', 'REAL']);

    for (const v of ['E1', 'E2']) expect((await call(ranked, 'DELETE', `/v1/visitors/${v}`, adminKey)).statusCode).toBe(200);

    // The erased ids are gone from the list, and the one visitor left with counts is the top one.
    expect({ limit1: (await top(1)).items, limit3: (await top(3)).items }).toEqual({
      limit1: [{ id: 'REAL', value: 1 }],
      limit3: [{ id: 'REAL', value: 1 }],
    });
  });
});

describe('erasing a visitor under rules that key no entity by the visitor id alone', () => {
  it('is a 409 saying nothing of a visitor is erasable (not a 404 "nothing stored"), with no tombstone; in the OpenAPI document', async () => {
    const { visitor: _, ...entities } = defaultRules.entities;
    const events = Object.fromEntries(
      Object.entries(defaultRules.events).map(([type, spec]) => [
        type,
        { ...spec, counters: spec.counters.filter((c) => c.entity !== 'visitor') },
      ]),
    );
    const rules = compileRules({ ...defaultRules, entities, events });
    const unerasable = await f.app({
      query: {
        buckets: f.buckets,
        dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() },
        rules,
        historyMemo: new HistoryMemo(),
      },
      admin: adminDeps(undefined),
    });
    const store = 'SHOP_NOERASE';
    await f.tenant(store);
    const adminKey = await issueKey(f.db, store, ['admin'], 'admin');
    const problem = expectProblem(await call(unerasable, 'DELETE', '/v1/visitors/V1', adminKey), 409);
    expect(problem).toMatchObject({
      code: 'TALLY_ERR_CONFLICT',
      detail: expect.stringMatching(/^the rollup rules key no entity by the visitor id alone/),
    });
    expect(problem.field).toBeUndefined();
    expect(await f.redis.exists(f.buckets.keys.erased(store))).toBe(0);
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    expect(Object.keys(doc.paths['/v1/visitors/{visitor}'].delete.responses)).toContain('409');
  });
});

describe('erasing a visitor: the id', () => {
  it('is checked as every id is: a malformed one is a 400 problem naming the visitor, and nothing is erased', async () => {
    const adminA = await issueAdmin('SHOP_A');
    for (const visitor of ['a%23b', 'a%7Cb', 'a%20b', '%7Bx%7D', '']) {
      const problem = expectProblem(await call(app, 'DELETE', `/v1/visitors/${visitor}`, adminA), 400, 'visitor');
      expect(problem.code).toBe('TALLY_ERR_BAD_REQUEST');
      expect(problem.detail).toBe('visitor: a visitor id is 1-128 characters of A-Z a-z 0-9 _ . : -');
    }
    // Too long: a 400 problem naming the visitor too.
    expect(expectProblem(await call(app, 'DELETE', `/v1/visitors/${'V'.repeat(129)}`, adminA), 400, 'visitor').code).toBe(
      'TALLY_ERR_BAD_REQUEST',
    );
    // `a#b` would have been the row SHOP_A#visitor#a#b, an entity row of two key values: no erasure mark was left.
    expect(await f.redis.zscore(f.buckets.keys.erased('SHOP_A'), f.rules.pkOf('SHOP_A', 'visitor', ['a#b']))).toBeNull();
    // A well-formed id goes on to the erasure (nothing of it stored: 404).
    // The longest (128 characters, past the router's default limit of 100 for a path parameter) too.
    expectProblem(await call(app, 'DELETE', `/v1/visitors/${'V'.repeat(128)}`, adminA), 404);
    expectProblem(await call(app, 'DELETE', '/v1/visitors/a.b:c-d_e', adminA), 404);
    // A key without the admin scope is still refused first.
    expectProblem(await call(app, 'DELETE', '/v1/visitors/a%23b', keys.read), 403, 'authorization');
  });

  it('is the shared id pattern, in the contract and the OpenAPI document', async () => {
    expect([VISITOR_ID_PATTERN.source, VISITOR_ID_PATTERN.flags]).toEqual([ID_PATTERN.source, ID_PATTERN.flags]);
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    const param = doc.paths['/v1/visitors/{visitor}'].delete.parameters.find((p: { name: string }) => p.name === 'visitor');
    expect(param).toMatchObject({ in: 'path', required: true, schema: { type: 'string', pattern: ID_PATTERN.source } });
  });
});

describe('deleting a store', () => {
  it('removes every item, key and Redis key and reports it; again is 404; its keys stop working', async () => {
    const t = new Date(Date.now() - 60_000).toISOString();
    const k = await f.tenant('SHOP_DEL');
    await f.apply('SHOP_DEL', 'UTC', [view(t, 'P1', 'V1'), order(t, '5.00', 'V2')]);
    await f.flush('SHOP_DEL');
    await f.apply('SHOP_DEL', 'UTC', [view(t, 'P9', 'V9')]);
    await queues[QUEUE.events].add('events', { store: 'SHOP_DEL', batchId: 'late', events: [] }, { delay: 60_000 });
    await queues[QUEUE.dynamoWrites].add('dynamo-writes', { store: 'SHOP_DEL', pk: 'SHOP_DEL' });
    await queues[QUEUE.dynamoWrites].add('dynamo-writes', { store: 'SHOP_A', pk: 'SHOP_A' });
    const r = await op('DELETE', '/v1/operator/stores/SHOP_DEL');
    expect(r.statusCode).toBe(200);
    const body = storeDeletionSchema.parse(r.json());
    expect(body.removed).toMatchObject({ apiKeys: 3, queuedJobs: 2, failedJobs: 0 });
    expect(body.removed.dynamoItems).toBeGreaterThan(4);
    expect(body.removed.redisKeys).toBeGreaterThan(4);
    expect(await f.redis.keys('q:{SHOP_DEL}:*')).toEqual(['q:{SHOP_DEL}:x']);
    const left = await f.client.send(new ScanCommand({ TableName: f.table }));
    // Nothing of the store is left but its entry in the tenant index (pk _tenants, sk SHOP_DEL), now the marker of the
    // finished deletion (when the id is free again, expiring). Its counter items are tombstone items (no counters,
    // expiring), the rest gone.
    const mine = (left.Items ?? []).filter((i) => `${i['pk']!.S!} ${i['sk']!.S!}`.includes('SHOP_DEL'));
    const marker = mine.filter((i) => i['pk']!.S === '_tenants');
    expect(marker.map((i) => Object.keys(i).sort())).toEqual([['expiresAt', 'pk', 'reusableAt', 'sk', 'wm.e']]);
    expect(Number(marker[0]!['reusableAt']!.N)).toBe(Date.parse(body.reusableAt));
    const items = mine.filter((i) => i['pk']!.S !== '_tenants');
    expect(items.filter((i) => i['wm.e'] === undefined)).toEqual([]);
    for (const it of items) expect(Object.keys(it).sort()).toEqual(['expiresAt', 'pk', 'sk', 'wm', 'wm.e']);
    expect(await queues[QUEUE.dynamoWrites].getJobCounts('waiting')).toEqual({ waiting: 1 }); // SHOP_A's stays
    expectProblem(await call(app, 'GET', '/v1/store', k.read), 401);
    expect(expectProblem(await op('DELETE', '/v1/operator/stores/SHOP_DEL'), 404).detail).toBe(
      `store SHOP_DEL was deleted at ${new Date(Date.parse(body.tombstoneUntil) - 3_600_000).toISOString()} (that deletion finished; nothing is left to delete): its id can be used again from ${body.reusableAt}`,
    );
    expect((await op('GET', '/v1/operator/stores')).json().stores.map((s: { store: string }) => s.store)).not.toContain('SHOP_DEL');
  });

  it("refuses to create the store again (409) until its tombstone has expired, rather than accept its keys' events and drop them", async () => {
    await f.tenant('SHOP_AGAIN');
    const deleted = storeDeletionSchema.parse((await op('DELETE', '/v1/operator/stores/SHOP_AGAIN')).json());
    // Free again when the Redis tombstone that drops every batch of the id expires: the dedupe window and its slack.
    expect(Date.parse(deleted.reusableAt) - Date.parse(deleted.tombstoneUntil)).toBe((keptForWindow(3_600) - 3_600) * 1000);
    const again = await op('POST', '/v1/operator/stores', { store: 'SHOP_AGAIN', adminKey: true });
    const problem = expectProblem(again, 409, 'store');
    expect(problem.code).toBe('TALLY_ERR_CONFLICT');
    expect(problem.detail).toContain(`its id can be used again from ${deleted.reusableAt}`);
    expect(await getTenant(f.db, 'SHOP_AGAIN')).toBeUndefined();
    expect((await op('GET', '/v1/operator/stores')).json().stores.map((s: { store: string }) => s.store)).not.toContain('SHOP_AGAIN');
    expect(await f.redis.exists(f.buckets.keys.tombstone('SHOP_AGAIN'))).toBe(1); // never cleared
  });

  it('an empty store id is a 400 naming the store, not a DynamoDB error', async () => {
    const r = await op('DELETE', '/v1/operator/stores/');
    expect(expectProblem(r, 400, 'store').detail).toMatch(/^store id "" is invalid/);
  });
});

describe('a store deleted and made again', () => {
  it("never answers segments from the deleted store's visitor history, not even one this process memoised", async () => {
    const t = new Date(Date.now() - 60_000).toISOString();
    const pk = f.rules.pkOf('SHOP_RE', 'visitor', ['V1']);
    const evaluate = async (key: string) =>
      (
        await call(app, 'POST', '/v1/segments/evaluate', key, {
          visitor: 'V1',
          segments: [{ name: 's', rules: [{ metric: 'ViewCount', range: 'allTime', op: '>=', value: 1 }] }],
        })
      ).json();
    const before = await f.tenant('SHOP_RE');
    await f.apply('SHOP_RE', 'UTC', [view(t, 'P1', 'V1')]);
    await f.flush('SHOP_RE');
    // Two days after the visitor's last write, its cache version key has expired: the snapshot reads version '0'.
    await f.redis.del(f.buckets.keys.cacheVersion('SHOP_RE', pk));
    expect((await evaluate(before.read)).segments[0].rules[0].actual).toBe(1);
    expect(await evaluate(before.read)).toMatchObject({ cache: 'hit', segments: [{ rules: [{ actual: 1 }] }] });
    const deleted = storeDeletionSchema.parse((await op('DELETE', '/v1/operator/stores/SHOP_RE')).json());
    // Made again as soon as it may be (its tombstone expired: dropped here, as Redis would by then): its rows read
    // version '0' again (every key of the store went).
    await f.redis.del(f.buckets.keys.tombstone('SHOP_RE'));
    await createTenant(f.db, 'SHOP_RE', { now: () => Date.parse(deleted.reusableAt) });
    const after = { read: await issueKey(f.db, 'SHOP_RE', ['read'], 'dashboard') };
    expect(await evaluate(after.read)).toMatchObject({ cache: 'miss', segments: [{ matched: false, rules: [{ actual: 0 }] }] });
  });
});

describe('an interrupted store deletion', () => {
  it('is resumed by calling it again: the first call dies after the keys and jobs went, the second removes the rest', async () => {
    const t = new Date(Date.now() - 60_000).toISOString();
    await f.tenant('SHOP_CUT');
    await f.apply('SHOP_CUT', 'UTC', [view(t, 'P1', 'V1'), order(t, '5.00', 'V2')]);
    await f.flush('SHOP_CUT');
    await f.apply('SHOP_CUT', 'UTC', [view(t, 'P2', 'V3')]);
    const deps = adminDeps(OPERATOR).erasure;
    class DiesOnce extends BucketEraser {
      died = false;
      override async deleteStoreKeys(store: string): Promise<number> {
        if (!this.died) {
          this.died = true;
          throw new Error('interrupted (test)');
        }
        return super.deleteStoreKeys(store);
      }
    }
    const cut = new DiesOnce({ redis: f.redis, buckets: f.buckets });
    await expect(deleteStore({ ...deps, db: f.db, eraser: cut }, 'SHOP_CUT')).rejects.toThrow('interrupted (test)');
    // Half done: the tenant is still there (marked), its items already tombstone items (they are replaced before the
    // Redis keys go), its Redis keys still to remove.
    const scan = async (tombstones: boolean) =>
      ((await f.client.send(new ScanCommand({ TableName: f.table }))).Items ?? [])
        .filter((i) => (i['wm.e'] !== undefined) === tombstones)
        .map((i) => i['pk']!.S!)
        .filter((pk) => pk.includes('SHOP_CUT'));
    expect(new Set(await scan(false))).toEqual(new Set(['_tenant#SHOP_CUT'])); // the tenant's items, and no counter item
    expect((await scan(true)).length).toBeGreaterThan(1);
    expect((await f.redis.keys('q:{SHOP_CUT}:*')).length).toBeGreaterThan(1);
    const r = await op('DELETE', '/v1/operator/stores/SHOP_CUT');
    expect(r.statusCode).toBe(200);
    expect(storeDeletionSchema.parse(r.json()).removed.dynamoItems).toBe(0); // replaced by the first call
    expect(await scan(false)).toEqual([]);
    expect(await f.redis.keys('q:{SHOP_CUT}:*')).toEqual(['q:{SHOP_CUT}:x']);
    expectProblem(await op('DELETE', '/v1/operator/stores/SHOP_CUT'), 404);
  });
});

describe('the contract', () => {
  it('every admin and operator route is in the OpenAPI document, with an operation id and an example answer', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    expect(await openApi31Errors(doc)).toEqual([]);
    const ops: Record<string, string> = {};
    for (const [path, methods] of Object.entries(
      doc.paths as Record<string, Record<string, { operationId: string; responses: Record<string, any>; security?: unknown }>>,
    )) {
      for (const [method, o] of Object.entries(methods)) {
        if (!/admin|operator|visitors/.test(path)) continue;
        ops[`${method.toUpperCase()} ${path}`] = o.operationId;
        const ok = o.responses['200'] ?? o.responses['201'];
        expect(ok.content['application/json'].example, path).toBeDefined();
        expect(Object.keys(o.responses).sort()).toEqual(expect.arrayContaining(['400', '401', '403', '404', '500', '503']));
        // A route with a body answers a body over the limit and another media type too.
        if (method === 'post' || method === 'patch') expect(Object.keys(o.responses), path).toEqual(expect.arrayContaining(['413', '415']));
      }
    }
    expect(Object.keys(doc.paths['/v1/operator/stores'].post.responses)).toContain('409');
    expect(ops).toEqual({
      'GET /v1/admin/store': 'getOwnStore',
      'PATCH /v1/admin/store': 'updateOwnStore',
      'GET /v1/admin/keys': 'listKeys',
      'POST /v1/admin/keys': 'issueKey',
      'DELETE /v1/admin/keys/{keyId}': 'revokeKey',
      'DELETE /v1/visitors/{visitor}': 'eraseVisitor',
      'GET /v1/operator/stores': 'listStores',
      'POST /v1/operator/stores': 'createStore',
      'GET /v1/operator/stores/{store}': 'getStoreById',
      'PATCH /v1/operator/stores/{store}': 'updateStore',
      'DELETE /v1/operator/stores/{store}': 'deleteStore',
    });
    expect(doc.components.securitySchemes.operator).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('audits every call in one line (who, what, when, status) and never logs a key', async () => {
    const lines = logged.flatMap((chunk) => chunk.split('\n').filter(Boolean)).map((l) => JSON.parse(l));
    const audits = lines.filter((l) => l.msg === 'audit').map((l) => l.audit);
    expect(audits.length).toBeGreaterThan(20);
    expect(audits).toContainEqual({
      actor: 'operator',
      store: 'SHOP_DEL',
      action: 'DELETE /v1/operator/stores/:store',
      target: { store: 'SHOP_DEL' },
      status: 200,
      at: expect.any(String),
    });
    expect(audits).toContainEqual(
      expect.objectContaining({
        actor: expect.stringMatching(/^key:[0-9a-f]{12}$/),
        store: 'SHOP_A',
        action: 'DELETE /v1/visitors/:visitor',
        status: 200,
      }),
    );
    expect(audits.find((a) => a.action === 'DELETE /v1/visitors/:visitor').target.visitor).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(audits).toContainEqual(expect.objectContaining({ actor: 'anonymous', action: 'GET /v1/operator/stores', status: 401 }));
    const text = logged.join('');
    for (const key of [OPERATOR, admin, keys.read, keys.both]) expect(text).not.toContain(key);
    expect(text).not.toMatch(/tly_[A-Za-z0-9_-]{43}/);
  });
});

async function issueAdmin(store: string): Promise<string> {
  return issueKey(f.db, store, ['admin'], 'test admin');
}

let noBodyAdmin: string;
let openapi: { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };

/** The answer, and whether the operation's OpenAPI entry documents its status. */
async function answer(method: 'DELETE' | 'GET', url: string, path: string, headers: Record<string, string>, payload?: string) {
  const r = await app.inject({ method, url, headers, ...(payload !== undefined && { payload }) });
  const documented = openapi.paths[path]?.[method.toLowerCase()]?.responses[String(r.statusCode)] !== undefined;
  return { status: r.statusCode, code: r.statusCode >= 400 ? PROBLEM_SCHEMA.parse(r.json()).code : undefined, documented };
}

describe('a request to a route that takes no body (the DELETEs, the GETs: libs/http ignores one sent anyway, up to the body limit)', () => {
  beforeAll(async () => {
    noBodyAdmin = await issueKey(f.db, 'SHOP_A', ['admin'], 'no-body admin');
    openapi = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
  });

  it('is not refused for the Content-Type of its empty body', async () => {
    const r = await answer('DELETE', '/v1/admin/keys/nokey', '/v1/admin/keys/{keyId}', {
      ...bearer(noBodyAdmin),
      'content-type': 'application/x-www-form-urlencoded',
      'content-length': '0',
    });
    // An unknown key: 404, as without the header (not 415).
    expect(r).toEqual({ status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true });
  });

  it('is answered as without its body, whatever its Content-Type or Content-Encoding, and 413 over the body limit: a status its OpenAPI operation documents', async () => {
    const answers = {
      deleteKeyTextBody: await answer(
        'DELETE',
        '/v1/admin/keys/nokey',
        '/v1/admin/keys/{keyId}',
        { ...bearer(noBodyAdmin), 'content-type': 'text/plain' },
        'x',
      ),
      deleteStoreBigBody: await answer(
        'DELETE',
        '/v1/operator/stores/NOPE',
        '/v1/operator/stores/{store}',
        { ...bearer(OPERATOR), 'content-type': 'application/json' },
        ' '.repeat(1_000_000),
      ),
      deleteStoreTooLargeBody: await answer(
        'DELETE',
        '/v1/operator/stores/NOPE',
        '/v1/operator/stores/{store}',
        { ...bearer(OPERATOR), 'content-type': 'application/json' },
        ' '.repeat(2_000_000),
      ),
      getStoreTooLargeBody: await answer('GET', '/v1/store', '/v1/store', { ...bearer(keys.read) }, ' '.repeat(2_000_000)),
      getStoreEncoded: await answer('GET', '/v1/store', '/v1/store', { ...bearer(keys.read), 'content-encoding': 'zstd' }),
    };
    expect(answers).toEqual({
      deleteKeyTextBody: { status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true },
      deleteStoreBigBody: { status: 404, code: 'TALLY_ERR_NOT_FOUND', documented: true },
      deleteStoreTooLargeBody: { status: 413, code: 'TALLY_ERR_BODY_TOO_LARGE', documented: true },
      getStoreTooLargeBody: { status: 413, code: 'TALLY_ERR_BODY_TOO_LARGE', documented: true },
      getStoreEncoded: { status: 200, code: undefined, documented: true },
    });
  });
});
