import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter } from '@tally/dynamo';
import { createTenantDirectory, keyIdOf, revokeKey } from '@tally/tenants';
import { redisKeys } from '@tally/key-layout';
import { freePort, startRedis, waitFor } from '@tally/testing';
import { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { badRequest, bearer, useFixture, view } from '../test/fixture';
import type { QueryApiApp } from './app';

const NOW = Date.parse('2024-03-15T12:00:00Z');

const f = useFixture();
let app: QueryApiApp;
let keys: { read: string; ingest: string; both: string };

beforeAll(async () => {
  keys = await f.tenant('SHOP_A');
  await f.tenant('SHOP_B');
  await f.apply('SHOP_A', 'UTC', [view('2024-03-15T10:00:00Z', 'P1', 'V1')]);
  app = await f.app({ now: () => NOW, limits: { maxEntitiesPerRequest: 3, sessionIdleSeconds: 60 } });
});

const get = async (url: string, headers: Record<string, string> = bearer(keys.read)) => {
  const res = await app.inject({ method: 'GET', url, headers });
  return { status: res.statusCode, body: res.json(), headers: res.headers };
};
const evaluate = async (payload: unknown, headers: Record<string, string> = bearer(keys.read)) => {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/segments/evaluate',
    headers: { ...headers, 'content-type': 'application/json' },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
  return { status: res.statusCode, body: res.json() };
};

const rule = { metric: 'ProductViews', key: 'P1', range: 'last3m', op: '>=', value: 1 };

describe('bad input: 400 naming the field', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['/v1/series?metrics=ViewCount,Bogus', 'metrics', /unknown metric "Bogus"; known: ViewCount, PageViewCount/],
    ['/v1/series?metrics=ProductViews', 'metrics', /ProductViews is keyed by product/],
    ['/v1/series?metrics=ViewCount%23P1', 'metrics', /ViewCount is not keyed/],
    ['/v1/series?metrics=ProductViews%23P%20x', 'metrics', /key "P x"/],
    ['/v1/series?metrics=', 'metrics', /at least one metric/],
    ['/v1/series?from=2024-03-10&to=2024-03-01', 'from', /from=2024-03-10 is after to=2024-03-01/],
    ['/v1/series?from=2014-01-01&to=2024-03-15', 'to', /more than 3660 days/],
    ['/v1/series?from=2024-02-30&to=2024-03-01', 'from', /^2024-02-30 is not a day: 2024-02 has 29 days$/],
    ['/v1/series?from=2024-13-01&to=2024-03-01', 'from', /^2024-13-01 is not a day: there is no month 13$/],
    ['/v1/series?from=2024-03-01&to=March', 'to', /^must be a date YYYY-MM-DD, got "March"$/],
    ['/v1/series?from=2024-03-01', 'to', /to is required/],
    ['/v1/series?to=2024-03-01', 'from', /from is required/],
    ['/v1/series?range=last7d&from=2024-03-01&to=2024-03-02', 'range', /either range or from and to/],
    ['/v1/series?granularity=hour', 'granularity', /^granularity: unknown value "hour"; known: day, month, year, total$/],
    ['/v1/series?range=last2d', 'range', /^range: unknown value "last2d"; known: today, yesterday, last7d, .*, allTime$/],
    // Quoted whole, however long (not cut at 40 characters as other values shown are).
    [`/v1/series?range=${'x'.repeat(60)}`, 'range', new RegExp(`^range: unknown value "${'x'.repeat(60)}"; known: `)],
    ['/v1/series?range=allTime&granularity=day', 'granularity', /^range allTime answers granularity year or total, not day$/],
    ['/v1/series?entity=shop', 'entity', /unknown entity "shop"; known: store, product, visitor/],
    ['/v1/series?entity=product', 'entity', /needs an id: entity=product:<id>/],
    ['/v1/series?entity=product:P%23x', 'entity', /id "P#x" of entity product/],
    ['/v1/series?entity=constructor:x', 'entity', /unknown entity "constructor"/],
    // Naming no store is bad input, not another store's 404.
    ['/v1/series?entity=store:', 'entity', /^entity=store: \(an empty id\) names no store; entity=store reads the store of the API key$/],
    ['/v1/series?store=SHOP_A&store=SHOP_A', 'store', /^store: is given twice; give it once$/],
    ['/v1/top?entity=product&metric=ViewCount&store=SHOP_A&store=SHOP_B&store=SHOP_A', 'store', /^store: is given 3 times; give it once$/],
    ['/v1/series?store=', 'store', /^store: is empty; name the store of the API key, or leave store out$/],
    // Any parameter taking one value, given more than once: said so, not "must be a string, got an array".
    ['/v1/series?entity=store&entity=store', 'entity', /^entity: is given twice; give it once$/],
    ['/v1/series?range=today&range=today', 'range', /^range: is given twice; give it once$/],
    ['/v1/series?granularity=day&granularity=day&granularity=month', 'granularity', /^granularity: is given 3 times; give it once$/],
    ['/v1/totals?entity=product&ids=P1&from=2024-03-01&from=2024-03-01&to=2024-03-02', 'from', /^from: is given twice; give it once$/],
    ['/v1/series?metric=ViewCount', 'metric', /unknown parameter "metric"; known: entity, metrics, range, from, to, store, granularity$/],
    ['/v1/series?entity=visitor&id=V1', 'id', /unknown parameter "id"; known: entity, .*; the id goes in entity: entity=visitor:V1$/],
    ['/v1/series?ids=P1', 'ids', /; the id goes in entity: entity=<entity>:P1$/],
    ['/v1/totals?entity=product&ids=P1,P2,P3,P4', 'ids', /4 ids; at most 3/],
    ['/v1/totals?entity=product&ids=P1,bad%20id', 'ids', /id "bad id"/],
    ['/v1/totals?entity=product', 'ids', /at least one product id/],
    ['/v1/totals?entity=product&ids=P1&metrics=__proto__', 'metrics', /unknown metric/],
    ['/v1/totals?ids=P1', 'entity', /entity/],
    ['/v1/totals?entity=visitor:V1', 'entity', /the ids go in ids: entity=visitor&ids=V1/],
    ['/v1/top?entity=product&metric=ViewCount&range=last12m', 'range', /covers 366 days; top lists cover at most 92/],
    ['/v1/top?entity=product&metric=ViewCount&range=allTime', 'range', /not allTime \(all-time counts per id: \/v1\/totals\)$/],
    // Unique visitors are sketches, not ranked counters: refused, never an empty list.
    [
      '/v1/top?entity=product&metric=UniqueVisitors',
      'metric',
      /^rankings cover counters only; UniqueVisitors is a distinct count of product, read per id with \/v1\/totals or \/v1\/series$/,
    ],
    ['/v1/top?entity=product&metric=ViewCount&from=2024-01-01&to=2024-04-02', 'range', /93 days/],
    ['/v1/top?entity=visitor&metric=ViewCount', 'entity', /keeps no rankings; ranked: product/],
    ['/v1/top?entity=product&metric=Nope', 'metric', /unknown metric "Nope"/],
    ['/v1/top?entity=product&metric=ViewCount&limit=0', 'limit', /limit/],
    ['/v1/top?entity=product', 'metric', /^metric: is required$/],
    ['/v1/top?entity=product:P1&metric=ViewCount', 'entity', /entity takes the name alone here \(product\), not product:P1/],
  ];
  it.each(cases)('GET %s → 400 field %s', async (url, field, message) => {
    const { status, body } = await get(url);
    expect(status).toBe(400);
    expect(body).toEqual(badRequest(field, expect.stringMatching(message)));
  });

  const bodies: Array<[string, unknown, string]> = [
    ['bad op', { visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, op: '=>' }] }] }, 'segments.0.rules.0.op'],
    [
      'unknown metric',
      { visitor: 'V1', segments: [{ name: 's', rules: [rule, { ...rule, metric: 'Clicks' }] }] },
      'segments.0.rules.1.metric',
    ],
    [
      'keyed metric without key',
      { visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, key: undefined }] }] },
      'segments.0.rules.0.key',
    ],
    ['unknown range', { visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, range: 'forever' }] }] }, 'segments.0.rules.0.range'],
    ['bad visitor id', { visitor: 'V 1', segments: [{ name: 's', rules: [rule] }] }, 'visitor'],
    ['no segments', { visitor: 'V1', segments: [] }, 'segments'],
    ['no visitor', { segments: [{ name: 's', rules: [rule] }] }, 'visitor'],
    ['unknown field', { visitor: 'V1', segments: [{ name: 's', rules: [rule] }], extra: 1 }, 'extra'],
    ['not JSON', '{"visitor":', 'body'],
  ];
  it.each(bodies)('POST /v1/segments/evaluate with %s → 400 field %s', async (_what, payload, field) => {
    const { status, body } = await evaluate(payload);
    expect(status).toBe(400);
    // A body that is not JSON at all is malformed; one that is JSON but wrong is a bad request.
    const code = field === 'body' ? 'TALLY_ERR_MALFORMED_BODY' : 'TALLY_ERR_BAD_REQUEST';
    expect(body).toMatchObject({ title: 'Bad Request', code, field });
  });

  it('names the value given and the known ones for a value outside a list, in a body too', async () => {
    const { body } = await evaluate({ visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, op: '=>' }] }] });
    expect(body).toMatchObject({ detail: 'segments.0.rules.0.op: unknown value "=>"; known: >=, >, =, <=, <, !=' });
    const { op: _, ...noOp } = rule;
    expect((await evaluate({ visitor: 'V1', segments: [{ name: 's', rules: [noOp] }] })).body).toMatchObject({
      detail: 'segments.0.rules.0.op: is required, one of: >=, >, =, <=, <, !=',
    });
    expect((await evaluate({ visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, op: 3 }] }] })).body).toMatchObject({
      detail: 'segments.0.rules.0.op: must be one of: >=, >, =, <=, <, !=; got 3',
    });
  });

  it('says a missing member is required, not zod\'s "expected string, received undefined"', async () => {
    expect((await evaluate({ segments: [{ name: 's', rules: [rule] }] })).body).toMatchObject({ detail: 'visitor: is required' });
    expect((await evaluate({ visitor: 'V1', segments: [{ name: 's', rules: [{ ...rule, value: 'x' }] }] })).body.detail).toBe(
      'segments.0.rules.0.value: must be a number, got "x"',
    );
  });

  it("says a bound or a type in the API's words, naming what was sent, not zod's", async () => {
    const detail = async (url: string) => (await get(url)).body.detail;
    expect(await detail('/v1/top?entity=product&metric=ViewCount&limit=0')).toBe('limit: must be at least 1, got "0"');
    expect(await detail('/v1/top?entity=product&metric=ViewCount&limit=500')).toBe('limit: must be at most 100, got "500"');
    // Decimal digits only, and the bound named is the parameter's, however many digits were sent.
    const top = '/v1/top?entity=product&metric=ViewCount&limit=';
    expect(await detail(`${top}9999999999999999999999`)).toBe('limit: must be at most 100, got "9999999999999999999999"');
    expect(await detail(`${top}1${'0'.repeat(400)}`)).toBe(`limit: must be at most 100, got "1${'0'.repeat(35)}...`);
    for (const [sent, shown] of [
      ['1.5', '1.5'],
      ['ten', 'ten'],
      ['0x10', '0x10'],
      ['1e1', '1e1'],
      ['%205', ' 5'],
      ['5%20', '5 '],
      ['-5', '-5'],
      ['', ''],
    ])
      expect(await detail(`${top}${sent}`), sent).toBe(`limit: must be a whole number from 1 to 100, in decimal digits, got "${shown}"`);
    expect(await detail(`${top}1.${'5'.repeat(60)}`)).toBe(
      `limit: must be a whole number from 1 to 100, in decimal digits, got "1.${'5'.repeat(34)}...`,
    );
    expect(await detail(`${top}5&limit=5`)).toBe('limit: is given twice; give it once');
    expect((await get(`${top}007`)).body.items).toEqual([expect.objectContaining({ id: 'P1' })]);
    const body = async (payload: unknown) => (await evaluate(payload)).body.detail;
    expect(await body({ visitor: 'V1', segments: [] })).toBe('segments: must have at least 1 item, got 0');
    expect(await body({ visitor: 'V1', segments: [{ name: '', rules: [rule] }] })).toBe(
      'segments.0.name: must be at least 1 character long',
    );
    expect(await body({ visitor: 5, segments: [{ name: 's', rules: [rule] }] })).toBe('visitor: must be a string, got 5');
    expect(await body([])).toBe('body: must be an object, got an array');
    const huge = '{"visitor":"V1","segments":[{"name":"s","rules":[{"metric":"ViewCount","range":"last3m","op":">=","value":1e400}]}]}';
    expect(await body(huge)).toBe('segments.0.rules.0.value: must be a finite number, got Infinity');
    const none = await app.inject({ method: 'POST', url: '/v1/segments/evaluate', headers: bearer(keys.read) });
    expect(none.json()).toMatchObject({ status: 400, detail: 'body: is required', field: 'body' });
  });
});

describe('authentication', () => {
  it('401 without a key, with a malformed header or an unknown key', async () => {
    for (const headers of [{}, { authorization: `Basic ${keys.read}` }, bearer('tly_unknownunknownunknownunknown'), bearer('x')]) {
      const { status, body, headers: h } = await get('/v1/series', headers);
      expect(status).toBe(401);
      expect(body).toMatchObject({ title: 'Unauthorized', code: 'TALLY_ERR_UNAUTHORIZED' });
      expect(h['www-authenticate']).toBe('Bearer realm="tally"');
    }
  });

  it('401 before validating anything, so nothing is revealed to an unauthenticated caller', async () => {
    expect((await get('/v1/series?granularity=hour', {})).status).toBe(401);
    expect((await evaluate('{', {})).status).toBe(401);
  });

  it('403 for a key without the read scope, 200 for read and read+ingest keys', async () => {
    const ingest = await get('/v1/series', bearer(keys.ingest));
    expect(ingest).toMatchObject({
      status: 403,
      body: { title: 'Forbidden', code: 'TALLY_ERR_FORBIDDEN', detail: 'this API key lacks the "read" scope (it has: ingest)' },
    });
    expect((await evaluate({ visitor: 'V1', segments: [{ name: 's', rules: [rule] }] }, bearer(keys.ingest))).status).toBe(403);
    expect((await get('/v1/series', bearer(keys.read))).status).toBe(200);
    expect((await get('/v1/series', bearer(keys.both))).status).toBe(200);
  });

  it('401 once a key is revoked', async () => {
    const { read } = await f.tenant('SHOP_REVOKE');
    expect((await get('/v1/store', bearer(read))).status).toBe(200);
    await revokeKey(f.db, 'SHOP_REVOKE', keyIdOf(read));
    expect((await get('/v1/store', bearer(read))).status).toBe(401);
  });
});

describe('unavailable backends: 503 with Retry-After', () => {
  it('503 when the tenant directory cannot check a key', async () => {
    const dead = createDynamoClient({
      endpoint: `http://127.0.0.1:${await freePort()}`,
      region: 'us-east-1',
      maxAttempts: 1,
      requestTimeoutMs: 500,
    });
    const down = await f.app({ directory: createTenantDirectory({ dynamo: dead, table: f.table, cacheTtlMs: 0 }) });
    const res = await down.inject({ method: 'GET', url: '/v1/series', headers: bearer(keys.read) });
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(res.json()).toMatchObject({ title: 'Service Unavailable', code: 'TALLY_ERR_UNAVAILABLE' });
    dead.destroy();
  });

  it('503 when Redis is unreachable, and /readyz says not ready', async () => {
    const server = await startRedis();
    const redis = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    redis.on('error', () => undefined);
    await waitFor(() => redis.status === 'ready');
    const buckets = new BucketStore({ redis, rules: f.rules, prefix: 'q' });
    const down = await f.app({
      query: { buckets, dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() }, rules: f.rules },
      ready: async () => redis.status === 'ready' && (await redis.ping()) === 'PONG',
    });
    expect((await down.inject({ method: 'GET', url: '/v1/series', headers: bearer(keys.read) })).statusCode).toBe(200);
    await server.stop();
    await waitFor(() => redis.status !== 'ready');
    for (const req of [
      { method: 'GET' as const, url: '/v1/series' },
      { method: 'GET' as const, url: '/v1/totals?entity=product&ids=P1' },
      { method: 'GET' as const, url: '/v1/top?entity=product&metric=ViewCount' },
      { method: 'POST' as const, url: '/v1/segments/evaluate', payload: { visitor: 'V1', segments: [{ name: 's', rules: [rule] }] } },
    ]) {
      const res = await down.inject({ ...req, headers: bearer(keys.read) });
      expect({ url: req.url, status: res.statusCode, retryAfter: res.headers['retry-after'], code: res.json().code }).toEqual({
        url: req.url,
        status: 503,
        retryAfter: '5',
        code: 'TALLY_ERR_UNAVAILABLE',
      });
    }
    expect((await down.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
    redis.disconnect();
  });

  it("503 with Retry-After, not 500, when the store's buckets move under every try of a snapshot (seals in between)", async () => {
    const sealKey = (await f.tenant('SHOP_SEAL')).read;
    await f.apply('SHOP_SEAL', 'UTC', [view('2024-03-15T10:00:00Z', 'P1', 'V1')]);
    const keys = redisKeys('q');
    let seals = 0;
    // Every SNAPSHOT call (KEYS: sealed, epoch) of SHOP_SEAL finds a new open bucket, as if a seal came before each try.
    const sealing = new Proxy(f.redis, {
      get(target, prop) {
        if (prop === 'evalsha') {
          return async (sha: string, numKeys: number, ...rest: string[]) => {
            if (rest[0] === keys.sealed('SHOP_SEAL') && rest[1] === keys.epoch('SHOP_SEAL')) await target.set(rest[1], String(++seals));
            return target.evalsha(sha, numKeys, ...rest);
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
      },
    });
    const buckets = new BucketStore({ redis: sealing, rules: f.rules, prefix: 'q' });
    const racing = await f.app({
      now: () => NOW,
      query: { buckets, dynamo: { client: f.client, table: f.table, meter: createDynamoMeter() }, rules: f.rules },
    });
    for (const req of [
      { method: 'GET' as const, url: '/v1/series' },
      { method: 'GET' as const, url: '/v1/totals?entity=product&ids=P1' },
      { method: 'GET' as const, url: '/v1/top?entity=product&metric=ViewCount' },
      { method: 'POST' as const, url: '/v1/segments/evaluate', payload: { visitor: 'V1', segments: [{ name: 's', rules: [rule] }] } },
    ]) {
      const before = seals;
      const res = await racing.inject({ ...req, headers: bearer(sealKey) });
      expect({ url: req.url, status: res.statusCode, retryAfter: res.headers['retry-after'], type: res.headers['content-type'] }).toEqual({
        url: req.url,
        status: 503,
        retryAfter: '5',
        type: 'application/problem+json; charset=utf-8',
      });
      expect(res.json()).toEqual({
        type: 'about:blank',
        title: 'Service Unavailable',
        status: 503,
        code: 'TALLY_ERR_UNAVAILABLE',
        detail: "the store's buckets were sealed during every try of one consistent read (9 tries); retry later",
      });
      expect(seals - before).toBe(9);
    }
  });

  it('503 for new requests once shutdown began; /healthz still answers', async () => {
    let closing = false;
    const closable = await f.app({ isClosing: () => closing });
    expect((await closable.inject({ method: 'GET', url: '/v1/store', headers: bearer(keys.read) })).statusCode).toBe(200);
    closing = true;
    const res = await closable.inject({ method: 'GET', url: '/v1/store', headers: bearer(keys.read) });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: 'TALLY_ERR_SHUTTING_DOWN' });
    expect((await closable.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await closable.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
  });
});

describe('unknown routes', () => {
  it('404 with the error body', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nothing', headers: bearer(keys.read) });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({
      type: 'about:blank',
      title: 'Not Found',
      status: 404,
      code: 'TALLY_ERR_NOT_FOUND',
      detail: 'no route GET /v1/nothing; see /docs',
    });
  });
});
