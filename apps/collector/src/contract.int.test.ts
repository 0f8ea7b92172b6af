import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { collectorEnv, loadConfig } from '@tally/config';
import { createDynamoClient } from '@tally/dynamo';
import { PROBLEM_SCHEMA } from '@tally/http';
import { redisKeys } from '@tally/key-layout';
import { createLogger } from '@tally/observability';
import { closeQueues, createQueues, QUEUE, queuePrefix } from '@tally/queues';
import { loadRules } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import { createTestTable, startDynalite, startRedis, waitFor, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { UnrecoverableError, Worker } from 'bullmq';
import type { LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type CollectorApp } from './app';
import { closeCollectorDeps, createCollectorDeps, type CollectorResources } from './deps';
import { createIngestBudget } from './ingest-budget';

// The collector's error contract: every 4xx and 5xx is an RFC 9457 problem (application/problem+json) with a
// TALLY_ERR_* code, and the edge cases of a hostile-input run (encodings, huge error lists, one store flooding).

let redis: RedisHandle;
let dynalite: DynaliteHandle;
let adminDynamo: ReturnType<typeof createDynamoClient>;
let res: CollectorResources;
let app: CollectorApp;
let closing = false;
/** One event with 77,777 unknown dims (built before the collector starts: building it blocks the event loop). */
let manyDims = '';
/** Under load a blocked event loop makes the queue-depth read stale (503): wait until the collector takes events. */
const collectorUp = () => waitFor(() => res.backpressure.redisUp, { message: 'collector reads the queue depth' });
const keys = { ingest: '', read: '', other: '', flood: '' };
/** FLOOD's own ingest budget in its tenant record (events per second); the bucket holds 60 s of it. */
const FLOOD_RATE = 1;
const BURST_SECONDS = 60;
/** The collector's own /openapi.json: each answer's members must be named in it. */
let openapi: {
  paths: Record<
    string,
    { post: { responses: Record<string, { content: Record<string, { schema: { properties: object; required?: string[] } }> }> } }
  >;
};
/** The ingest budget's clock: frozen unless a test moves it. */
let budgetClock = Date.now();

beforeAll(async () => {
  const dims: Record<string, string> = { product: 'P1' };
  for (let i = 0; i < 77_777; i++) dims[`d${i}`] = 'x';
  manyDims = JSON.stringify([{ type: 'view', ts: new Date().toISOString(), dims }]);
  [redis, dynalite] = await Promise.all([startRedis(), startDynalite()]);
  const table = await createTestTable(dynalite.endpoint);
  adminDynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo: adminDynamo, table });
  await admin.createTenant('SHOP1');
  await admin.createTenant('SHOP2');
  await admin.createTenant('FLOOD');
  keys.ingest = await admin.issueKey('SHOP1', ['ingest'], 'web');
  keys.read = await admin.issueKey('SHOP1', ['read'], 'dashboard');
  keys.other = await admin.issueKey('SHOP2', ['ingest'], 'other shop');
  keys.flood = await admin.issueKey('FLOOD', ['ingest'], 'one store flooding');
  await admin.setIngestBudget('FLOOD', FLOOD_RATE);
  const config = loadConfig(collectorEnv, {
    REDIS_URL: redis.url,
    DYNAMODB_ENDPOINT: dynalite.endpoint,
    DYNAMODB_TABLE: table,
    MAX_EVENTS_PER_REQUEST: '1000',
    INGEST_BUDGET_EVENTS_PER_SECOND: '1000',
    INGEST_BUDGET_BURST_SECONDS: String(BURST_SECONDS),
    // Every event counts as one here (ingest-budget.int.test.ts checks the least cost of a request).
    INGEST_MIN_EVENTS_PER_REQUEST: '1',
  });
  res = createCollectorDeps(config, createLogger({ name: 'collector-test', level: 'silent' }), loadRules());
  const deps = res.deps;
  const budget = createIngestBudget({
    redis: res.redis,
    keyPrefix: config.KEY_PREFIX,
    eventsPerSecond: config.INGEST_BUDGET_EVENTS_PER_SECOND,
    burstSeconds: config.INGEST_BUDGET_BURST_SECONDS,
    minEventsPerRequest: config.INGEST_MIN_EVENTS_PER_REQUEST,
    now: () => budgetClock,
  });
  app = await buildApp({ ...deps, budget, isClosing: () => closing || deps.isClosing() });
  openapi = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
  res.backpressure.start();
  await waitFor(() => res.redis.status === 'ready' && res.backpressure.depth !== undefined, { message: 'collector connected to redis' });
});

afterAll(async () => {
  await app?.close();
  if (res) await closeCollectorDeps(res);
  adminDynamo?.destroy();
  await Promise.all([redis?.stop(), dynalite?.stop()]);
});

const view = (product = 'P1') => ({ type: 'view', ts: new Date(Date.now() - 60_000).toISOString(), dims: { product, visitor: 'V1' } });

function post(payload: string | Buffer, headers: Record<string, string | undefined> = {}, url = '/v1/events') {
  const h: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${keys.ingest}` };
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) delete h[k];
    else h[k] = v;
  }
  return app.inject({ method: 'POST', url, headers: h, payload });
}

/** An answer as `expectProblem` reads it: from `inject`, or from a real connection (see {@link overHttp}). */
type Answer = Pick<LightMyRequestResponse, 'statusCode' | 'headers' | 'json'>;

/** The port the collector listens on for the tests that need real HTTP (Node's parser, not `inject`). */
async function listening(): Promise<number> {
  if (!app.server.listening) await app.listen({ port: 0, host: '127.0.0.1' });
  return (app.server.address() as AddressInfo).port;
}

/** A request over a real connection, as Node's http client sends it (no body: no Content-Type, no Content-Length). */
async function overHttp(opts: { method: string; path: string; headers: Record<string, string> }): Promise<Answer> {
  const port = await listening();
  return new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', ...opts }, (response) => {
      let text = '';
      response.on('data', (d) => (text += d));
      response.on('end', () => resolve({ statusCode: response.statusCode!, headers: response.headers, json: () => JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Raw bytes on a new connection, until the collector closes it; `sent` runs with the server's side of it. */
async function overSocket(bytes: string, sent?: (serverSide: Socket) => void): Promise<Answer> {
  const port = await listening();
  const serverSide = new Promise<Socket>((resolve) => app.server.once('connection', resolve));
  return new Promise((resolve, reject) => {
    let out = '';
    const client = connect(port, '127.0.0.1', () => {
      client.write(bytes);
      if (sent) void serverSide.then(sent);
    });
    client.on('data', (d: Buffer) => (out += d.toString('utf8')));
    client.on('error', reject);
    client.on('close', () => {
      const [head, body] = out.split('\r\n\r\n');
      const [statusLine, ...lines] = head!.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ statusCode: Number(statusLine!.split(' ')[1]), headers, json: () => JSON.parse(body!) });
    });
  });
}

/** The answer is a problem: status, media type, the RFC 9457 members and the code. */
function expectProblem(r: Answer, status: number, code: string, field?: string) {
  expect({ status: r.statusCode, type: r.headers['content-type'], body: r.statusCode === status ? undefined : r.json() }).toEqual({
    status,
    type: 'application/problem+json; charset=utf-8',
    body: undefined,
  });
  const body = PROBLEM_SCHEMA.parse(r.json());
  expect(body).toMatchObject({ type: 'about:blank', status, code });
  if (field !== undefined) expect(body.field).toBe(field);
  // The status is one the document lists for the operation (405, 408 and 431 too, answered by the edge and Node's
  // parser before the route), and every member a client gets is named in it: the problem schema allows more.
  const schema = openapi.paths['/v1/events']!.post.responses[String(status)]?.content['application/json']?.schema;
  expect(schema, `/openapi.json lists ${status} for POST /v1/events`).toBeDefined();
  expect(Object.keys(r.json()).filter((k) => !(k in (schema?.properties ?? {})))).toEqual([]);
  // And every member the document requires is there.
  expect((schema?.required ?? []).filter((k) => !(k in r.json()))).toEqual([]);
  return r.json();
}

describe('every error is one problem format', () => {
  it('400 malformed, invalid, bad header', async () => {
    expectProblem(await post('[{"type":'), 400, 'TALLY_ERR_MALFORMED_BODY', 'body');
    expectProblem(await post(JSON.stringify([{ type: 'view' }])), 400, 'TALLY_ERR_VALIDATION', '[0].ts');
    expectProblem(await post('[{"type":"view","ts":1,"dims":{}}, 7]'), 400, 'TALLY_ERR_VALIDATION', '[0].ts');
    expectProblem(await post('[7]'), 400, 'TALLY_ERR_VALIDATION', '[0]');
    expectProblem(await post('[]'), 400, 'TALLY_ERR_MALFORMED_BODY', 'body');
    expectProblem(await post(JSON.stringify([view()]), { 'idempotency-key': 'a b' }), 400, 'TALLY_ERR_BAD_REQUEST', 'idempotency-key');
  });

  it('400 naming the empty body for a POST with no body and no Content-Type, as `curl -X POST` sends it', async () => {
    const headers = { authorization: `Bearer ${keys.ingest}` };
    const injected = await app.inject({ method: 'POST', url: '/v1/events', headers });
    const sent = await overHttp({ method: 'POST', path: '/v1/events', headers });
    for (const r of [injected, sent]) {
      expect(expectProblem(r, 400, 'TALLY_ERR_MALFORMED_BODY', 'body').detail).toBe(
        'the body is empty; send a JSON array of events (Content-Type: application/json)',
      );
    }
  });

  it('401, 403, 404', async () => {
    const none = expectProblem(await post('[]', { authorization: undefined }), 401, 'TALLY_ERR_UNAUTHORIZED', 'authorization');
    expect(none.detail).toMatch(/Bearer/);
    expectProblem(await post('[]', { authorization: `Bearer ${keys.read}` }), 403, 'TALLY_ERR_FORBIDDEN');
    expectProblem(await app.inject({ method: 'GET', url: '/v2/nothing?access_token=x' }), 404, 'TALLY_ERR_NOT_FOUND');
  });

  it("/openapi.json lists every status of the README's answers table for POST /v1/events", async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const table = new Set([...readme.matchAll(/^ *\| (\d{3}) \|/gm)].map((m) => m[1]!));
    expect(table.size).toBeGreaterThan(10);
    const listed = Object.keys(openapi.paths['/v1/events']!.post.responses);
    expect([...table].filter((s) => !listed.includes(s))).toEqual([]);
  });

  it('405 with Allow for a known path asked with another method', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/events' });
    expect(expectProblem(res, 405, 'TALLY_ERR_METHOD_NOT_ALLOWED').detail).toBe('/v1/events takes POST, not GET');
    expect(res.headers['allow']).toBe('POST');
  });

  it('408 and 431 from the HTTP parser, before a route: problems the document lists', async () => {
    const long = await overSocket(`POST /v1/events HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${'k'.repeat(20_000)}\r\n\r\n`);
    expectProblem(long, 431, 'TALLY_ERR_HEADERS_TOO_LARGE', 'headers');
    // Node checks requestTimeout every second and hands the server this error (libs/http tests the timing): here it is
    // handed at once, on a connection whose request has not come (nothing sent: no byte left unread to reset it).
    const slow = await overSocket('', (socket) =>
      app.server.emit('clientError', Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket),
    );
    expectProblem(slow, 408, 'TALLY_ERR_REQUEST_TIMEOUT');
  });

  it('413 over MAX_BODY_BYTES and MAX_EVENTS_PER_REQUEST', async () => {
    const big = expectProblem(await post(`[${'0,'.repeat(600_000)}0]`), 413, 'TALLY_ERR_BODY_TOO_LARGE', 'body');
    expect(big).toMatchObject({ title: 'Payload Too Large', limit: 1_048_576 });
    expectProblem(await post(JSON.stringify(Array(1001).fill(0))), 413, 'TALLY_ERR_TOO_MANY_EVENTS');
  });

  it('415 for another content type', async () => {
    expectProblem(await post('type=view', { 'content-type': 'text/plain' }), 415, 'TALLY_ERR_UNSUPPORTED_MEDIA_TYPE', 'content-type');
  });

  it("422 for an Idempotency-Key whose batch is in the events queue's failed set once its fingerprint is gone", async () => {
    const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queues = createQueues(conn);
    const workerConn = conn.duplicate();
    // The aggregator refusing the batch (a store with no tenant, a batch past the dedupe window): the failed set.
    const worker = new Worker(
      QUEUE.events,
      async () => {
        throw new UnrecoverableError('refused');
      },
      { connection: workerConn, prefix: queuePrefix({ keyPrefix: 't', shards: 1 }, QUEUE.events) },
    );
    try {
      await collectorUp();
      const headers = { 'idempotency-key': 'refused-order-1' };
      const first = await post(JSON.stringify([view('P1')]), headers);
      expect(first.statusCode).toBe(202);
      const { batchId } = first.json();
      await waitFor(async () => (await queues.events.getJob(batchId))?.failedReason === 'refused', { message: 'the batch failed' });
      // Two dedupe windows later: the record is gone, in the store's slot and (bound in the upgrade window a new
      // installation opens too) where earlier versions look for it.
      await conn.del(redisKeys('t').idempotency('SHOP1', batchId), queues.events.toKey(`idem:${batchId}`));
      const body = expectProblem(
        await post(JSON.stringify([view('P2')]), headers),
        422,
        'TALLY_ERR_IDEMPOTENCY_CONFLICT',
        'idempotency-key',
      );
      expect(body.detail).toBe(
        `Idempotency-Key "refused-order-1" was used for a batch that is now in the events queue's failed set (job ${batchId}, refused by the aggregator); nothing was accepted. ` +
          `An operator can replay that batch (npm run dlq -- replay events ${batchId}); or send this one under a new key`,
      );
    } finally {
      await worker.close();
      await closeQueues(queues);
      workerConn.disconnect();
      conn.disconnect();
    }
  });

  it('503 while closing, with Retry-After', async () => {
    closing = true;
    try {
      const r = await post(JSON.stringify([view()]));
      expectProblem(r, 503, 'TALLY_ERR_SHUTTING_DOWN');
      expect(r.headers['retry-after']).toBe('1');
      expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      closing = false;
    }
  });
});

describe('Content-Encoding', () => {
  it('takes gzip and br bodies', async () => {
    const body = JSON.stringify([view('G1'), view('G2')]);
    const gz = await post(gzipSync(body), { 'content-encoding': 'gzip' });
    expect({ status: gz.statusCode, accepted: gz.json().accepted }).toEqual({ status: 202, accepted: 2 });
    const br = await post(brotliCompressSync(body), { 'content-encoding': 'br' });
    expect({ status: br.statusCode, accepted: br.json().accepted }).toEqual({ status: 202, accepted: 2 });
  });

  it('applies the body limit after decompression: a decompression bomb gets 413', async () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024, 0x20));
    expect(bomb.length).toBeLessThan(65_536);
    const r = await post(bomb, { 'content-encoding': 'gzip' });
    expect(expectProblem(r, 413, 'TALLY_ERR_BODY_TOO_LARGE').detail).toMatch(/once decompressed/);
  });

  it('plain JSON labelled gzip is a 400 naming the encoding, never a 202', async () => {
    const r = await post(JSON.stringify([view()]), { 'content-encoding': 'gzip' });
    expect(expectProblem(r, 400, 'TALLY_ERR_MALFORMED_BODY', 'content-encoding').detail).toMatch(/not valid gzip data/);
  });

  it('another encoding is 415 naming it', async () => {
    const r = await post(JSON.stringify([view()]), { 'content-encoding': 'compress' });
    expect(expectProblem(r, 415, 'TALLY_ERR_UNSUPPORTED_ENCODING', 'content-encoding').detail).toMatch(/"compress"/);
  });
});

describe('hostile bodies', () => {
  it('77,777 unknown dims in a 1 MB body get a small 400 naming dims', async () => {
    const payload = manyDims;
    expect(payload.length).toBeLessThan(1_048_576);
    await collectorUp();
    const r = await post(payload);
    const body = expectProblem(r, 400, 'TALLY_ERR_VALIDATION');
    expect(body.errors).toEqual([{ index: 0, field: 'dims', reason: 'has more than 64 dimensions; no event type declares that many' }]);
    expect(r.body.length).toBeLessThan(2_000);
  });

  it('lists the first 100 errors and counts them all', async () => {
    const payload = JSON.stringify(Array.from({ length: 1000 }, () => ({ type: 'nope', ts: 0 })));
    await collectorUp();
    const r = await post(payload);
    const body = expectProblem(r, 400, 'TALLY_ERR_VALIDATION');
    expect(body.errors).toHaveLength(100);
    expect(body.errors[99].index).toBe(99);
    expect(body).toMatchObject({ rejected: 1000, errorCount: 1000 });
    expect(r.body.length).toBeLessThan(20_000);
  });

  it('lists the first 100 errors of a partial 202 and counts them all, as a 400 does', async () => {
    const payload = JSON.stringify([view(), ...Array.from({ length: 999 }, () => ({ type: 'nope', ts: 0 }))]);
    await collectorUp();
    const r = await post(payload, {}, '/v1/events?partial=true');
    expect(r.statusCode).toBe(202);
    const body = r.json();
    expect(body).toMatchObject({ accepted: 1, rejected: 999, acceptedIndexes: [0], errorCount: 999 });
    expect(body.errors).toHaveLength(100);
    expect(body.errors[99].index).toBe(100);
    // Every member is one the document names for a 202.
    const schema = openapi.paths['/v1/events']!.post.responses['202']!.content['application/json']!.schema;
    expect(Object.keys(body).filter((k) => !(k in schema.properties))).toEqual([]);
    expect(r.body.length).toBeLessThan(20_000);
  });

  it('security headers on every answer', async () => {
    const r = await post(JSON.stringify([view()]));
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['x-frame-options']).toBe('DENY');
    expect(r.headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
  });
});

describe('per-store ingest budget', () => {
  it("the store over its budget of events (its tenant record's rate) alone gets 429 with Retry-After; other stores keep 202", async () => {
    const flood = { authorization: `Bearer ${keys.flood}` };
    const batch = (n: number) => JSON.stringify(Array.from({ length: n }, (_, i) => view(`P${i}`)));
    // A full bucket holds 60 events: 50 pass, then 20 do not (10 left; nothing taken), 10 do, and one more does not.
    expect((await post(batch(50), flood)).statusCode).toBe(202);
    const over = await post(batch(20), flood);
    expectProblem(over, 429, 'TALLY_ERR_RATE_LIMITED');
    expect(over.json()).toMatchObject({ eventsPerSecond: FLOOD_RATE, burst: FLOOD_RATE * BURST_SECONDS });
    expect(over.headers['retry-after']).toBe('10');
    expect((await post(batch(10), flood)).statusCode).toBe(202);
    expect((await post(batch(1), flood)).headers['retry-after']).toBe('1');
    // Other stores are not affected.
    expect((await post(batch(100))).statusCode).toBe(202);
    expect((await post(batch(100), { authorization: `Bearer ${keys.other}` })).statusCode).toBe(202);
    // Three seconds later three events have come back.
    budgetClock += 3_000;
    expect((await post(batch(3), flood)).statusCode).toBe(202);
    expect((await post(batch(1), flood)).statusCode).toBe(429);
    // Not the backpressure the throttling alert watches: scaling the aggregators does not lift a store's budget.
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/^tally_collector_backpressure_total\{[^}]*\} 0$/m);
    expect(metrics).toMatch(/^tally_events_rejected_total\{[^}]*reason="budget"[^}]*\} (?!0$)\d+$/m);
  });
});
