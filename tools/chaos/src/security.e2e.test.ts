import { keyIdOf } from '@tally/tenants';
import { createTallyClient, ValidationError } from '@tally/client';
import { everyBucketRules, startFleet, waitForDrain, type Fleet } from '@tally/loadgen';
import { QUEUE, QUEUE_NAMES } from '@tally/queues';
import { isAlive, metricValue } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Against the real fleet processes: tenant isolation for every key scope, no key in any log line, and hostile
// input refused at the edge without reaching the events queue or stopping any process.
let fleet: Fleet;
let collector: string;
let queryApi: string;
const keys = { revoked: '', unknown: `tly_${'A'.repeat(43)}` };
const A = 'SECA';
const B = 'SECB';

beforeAll(async () => {
  fleet = await startFleet({
    stores: [
      { id: A, timeZone: 'Europe/Paris' },
      { id: B, timeZone: 'UTC' },
    ],
    rules: everyBucketRules(),
    // Everything the apps can say, so a key in any log line would show.
    env: { LOG_LEVEL: 'trace', KEY_CACHE_TTL_MS: '200' },
  });
  collector = fleet.app('collector').url;
  queryApi = fleet.app('query-api').url;
  keys.revoked = await fleet.admin.issueKey(A, ['ingest', 'read'], 'revoked before use');
  await fleet.admin.revokeKey(A, keyIdOf(keys.revoked));
}, 120_000);

afterAll(async () => {
  if (!fleet) return;
  await fleet.stop();
  expect(fleet.pids().filter((p) => isAlive(p.pid))).toEqual([]);
});

const iso = () => new Date(Date.now() - 60_000).toISOString();
const view = (product: string, extra: Record<string, unknown> = {}) => ({
  type: 'view',
  ts: iso(),
  dims: { product, visitor: 'V1' },
  ...extra,
});

async function ingest(
  key: string | undefined,
  body: unknown,
  opts: { contentType?: string; query?: string; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/json', ...opts.headers };
  if (key !== undefined) headers['authorization'] = `Bearer ${key}`;
  try {
    const res = await fetch(`${collector}/v1/events${opts.query ?? ''}`, {
      method: 'POST',
      headers,
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text.startsWith('{') ? JSON.parse(text) : undefined };
  } catch (err) {
    // The collector may close the connection on a body it refuses before reading it all.
    return { status: 0, json: undefined, error: (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message };
  }
}

async function read(key: string | undefined, path: string) {
  const res = await fetch(`${queryApi}${path}`, { headers: key === undefined ? {} : { authorization: `Bearer ${key}` } });
  const text = await res.text();
  return { status: res.status, json: text.startsWith('{') ? JSON.parse(text) : undefined };
}

const allTimeViews = async (key: string, entity: string) => {
  const r = await read(key, `/v1/series?entity=${entity}&granularity=total&range=allTime&metrics=ViewCount`);
  expect(r.status).toBe(200);
  return r.json.totals.ViewCount as number;
};

const eventsJobs = async () => {
  const c = await fleet.queues[QUEUE.events].getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
  return Object.values(c).reduce((a, b) => a + b, 0);
};

describe('tenant isolation with every key scope', () => {
  it('each scope does only what it allows', async () => {
    const k = fleet.keys[A]!;
    const series = '/v1/series?entity=store&range=last7d';
    expect((await ingest(k.ingest, [view('P1')])).status).toBe(202);
    expect((await read(k.ingest, series)).status).toBe(403);
    expect((await ingest(k.read, [view('P1')])).status).toBe(403);
    expect((await read(k.read, series)).status).toBe(200);
    // An admin-only key administers its store (tools/tenants); it neither ingests nor reads counters.
    expect((await ingest(k.admin, [view('P1')])).status).toBe(403);
    expect((await read(k.admin, series)).status).toBe(403);
    expect((await ingest(k.all, [view('P1')])).status).toBe(202);
    expect((await read(k.all, series)).status).toBe(200);
    for (const bad of [keys.unknown, keys.revoked, 'not-a-key', undefined]) {
      expect((await ingest(bad, [view('P1')])).status).toBe(401);
      expect((await read(bad, series)).status).toBe(401);
    }
    expect((await ingest(undefined, [view('P1')], { headers: { authorization: `Basic ${k.ingest}` } })).status).toBe(401);
  });

  it("a key of one store can neither write into nor read another store's counts", async () => {
    const before = { a: await allTimeViews(fleet.keys[A]!.read, 'product:ISO'), b: await allTimeViews(fleet.keys[B]!.read, 'product:ISO') };
    expect(before).toEqual({ a: 0, b: 0 });
    expect(
      (
        await ingest(
          fleet.keys[A]!.ingest,
          [1, 2, 3].map(() => view('ISO')),
        )
      ).status,
    ).toBe(202);
    expect(
      (
        await ingest(
          fleet.keys[B]!.ingest,
          [1, 2, 3, 4, 5].map(() => view('ISO')),
        )
      ).status,
    ).toBe(202);
    // The store never comes from the body or the query string.
    const smuggled = await ingest(fleet.keys[A]!.ingest, [{ ...view('ISO'), store: B }]);
    expect(smuggled.status).toBe(400);
    expect(smuggled.json.errors[0].field).toBe('store');
    const viaQuery = await ingest(fleet.keys[A]!.ingest, [view('ISO')], { query: `?store=${B}` });
    expect([400, 202]).toContain(viaQuery.status);
    const aExpected = viaQuery.status === 202 ? 4 : 3;
    await waitForDrain(fleet, { timeoutMs: 60_000 });

    expect(await allTimeViews(fleet.keys[A]!.read, 'product:ISO')).toBe(aExpected);
    expect(await allTimeViews(fleet.keys[B]!.read, 'product:ISO')).toBe(5);
    // Naming the other store answers 404 on every route, whatever the scope of the key.
    for (const key of [fleet.keys[A]!.read, fleet.keys[A]!.all]) {
      for (const path of [
        `/v1/series?store=${B}&entity=store&range=last7d`,
        `/v1/series?entity=store:${B}&range=last7d`,
        `/v1/totals?entity=store&ids=${B}&range=allTime`,
        `/v1/totals?entity=product&ids=ISO&range=allTime&store=${B}`,
        `/v1/store?store=${B}`,
      ]) {
        const r = await read(key, path);
        expect([path, r.status]).toEqual([path, 404]);
      }
    }
    expect((await read(fleet.keys[A]!.read, '/v1/store')).json.store).toBe(A);
  });
});

describe('hostile input through the whole fleet', () => {
  it('is refused at the edge: nothing reaches the events queue, every process keeps serving', async () => {
    const key = fleet.keys[A]!.ingest;
    const jobsBefore = await eventsJobs();
    const acceptedBefore = metricValue(await fleet.app('collector').handle.metrics(), 'tally_events_accepted_total');

    const ev = JSON.stringify(view('P1'));
    const tenMb = `[${Array.from({ length: Math.ceil(10_000_000 / ev.length) }, () => ev).join(',')}]`;
    const big = await ingest(key, tenMb);
    expect(big.status === 413 || big.error !== undefined).toBe(true);
    if (big.status === 413) expect(big.json.code).toBe('TALLY_ERR_BODY_TOO_LARGE');
    const many = await ingest(key, JSON.stringify(Array(100_000).fill(0)));
    expect([many.status, many.json?.code]).toEqual([413, 'TALLY_ERR_TOO_MANY_EVENTS']);

    const refused: Array<[string, string | unknown[], string[]]> = [
      ['__proto__ at the top', `[{"type":"view","ts":"${iso()}","dims":{"product":"P1"},"__proto__":{"polluted":true}}]`, ['__proto__']],
      ['__proto__ in dims', `[{"type":"view","ts":"${iso()}","dims":{"product":"P1","__proto__":"x"}}]`, ['dims.__proto__']],
      [
        'constructor.prototype',
        `[{"type":"view","ts":"${iso()}","dims":{"product":"P1"},"constructor":{"prototype":{"polluted":true}}}]`,
        ['constructor'],
      ],
      ['NUL in a dim', [view('P\u0000')], ['dims.product']],
      ['NUL in an id', [view('P1', { id: 'a\u0000b' })], ['id']],
      ['# in a dim', [view('P#1')], ['dims.product']],
      ['| in a dim', [view('P|1')], ['dims.product']],
      ['# in a visitor', [{ type: 'view', ts: iso(), dims: { product: 'P1', visitor: 'V#1' } }], ['dims.visitor']],
      ['a dim the rules do not know', [view('P1', { dims: { product: 'P1', 'a|b': 'x' } })], ['dims.a|b']],
      ['a negative value', [{ type: 'order', ts: iso(), value: -1, dims: { visitor: 'V1' } }], ['value']],
    ];
    for (const [what, body, fields] of refused) {
      const r = await ingest(key, body);
      expect([what, r.status, r.json?.code]).toEqual([what, 400, 'TALLY_ERR_VALIDATION']);
      expect([what, r.json.errors.map((e: { field: string }) => e.field)]).toEqual([what, fields]);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect((await ingest(key, `${'['.repeat(100_000)}${']'.repeat(100_000)}`)).status).toBe(400);
    expect((await ingest(key, '{"type":"view"}\n{not json\n', { contentType: 'application/x-ndjson' })).status).toBe(400);
    expect((await ingest(key, 'type=view', { contentType: 'text/plain' })).status).toBe(415);
    expect((await ingest(key, [view('P1')], { headers: { 'idempotency-key': 'with space' } })).status).toBe(400);

    // The queue path validates the same way.
    const client = createTallyClient({ connection: fleet.redis.url, rules: fleet.rules, keyPrefix: fleet.prefix });
    try {
      for (const events of [
        [view('P#1')],
        [view('P|1')],
        [view('P\u0000')],
        [JSON.parse(`{"type":"view","ts":"${iso()}","dims":{"product":"P1","__proto__":"x"}}`)],
      ]) {
        await expect(client.enqueueEvents(A, events)).rejects.toBeInstanceOf(ValidationError);
      }
      await expect(client.enqueueEvents('SEC{A}', [view('P1')])).rejects.toThrow(/store/);
    } finally {
      await client.close();
    }

    // The query API refuses hostile parameters with 4xx naming them, never a 5xx.
    const rk = fleet.keys[A]!.read;
    for (const path of [
      '/v1/series?entity=product:P%231',
      '/v1/series?entity=product:P%7C1',
      '/v1/series?entity=product:P%001',
      '/v1/series?metrics=__proto__',
      '/v1/series?entity=__proto__:x',
      '/v1/series?from=2024-01-01%00&to=2024-01-02',
      '/v1/totals?entity=product&ids=' + Array.from({ length: 5_000 }, (_, i) => `P${i}`).join(','),
      '/v1/series?' + 'x'.repeat(100_000),
    ]) {
      const r = await read(rk, path);
      expect([path.slice(0, 60), r.status >= 400 && r.status < 500]).toEqual([path.slice(0, 60), true]);
    }

    expect(await eventsJobs()).toBe(jobsBefore);
    expect(metricValue(await fleet.app('collector').handle.metrics(), 'tally_events_accepted_total')).toBe(acceptedBefore);
    for (const app of fleet.apps) {
      expect([app.name, app.handle.process.exit]).toEqual([app.name, undefined]);
      expect([app.name, (await fetch(`${app.url}/readyz`)).status]).toEqual([app.name, 200]);
    }
    // And still counts a valid request.
    const before = await allTimeViews(rk, 'product:AFTER');
    expect((await ingest(key, [view('AFTER'), view('AFTER')])).status).toBe(202);
    await waitForDrain(fleet, { timeoutMs: 60_000 });
    expect(await allTimeViews(rk, 'product:AFTER')).toBe(before + 2);
    for (const name of QUEUE_NAMES) expect([name, await fleet.queues[name].getFailedCount()]).toEqual([name, 0]);
  });
});

describe('API keys in logs', () => {
  it('no issued key appears in any line any process printed', async () => {
    // Every app printed something at LOG_LEVEL=trace, so the watch saw real output.
    for (const app of fleet.apps) expect([app.name, app.handle.process.output().length > 0]).toEqual([app.name, true]);
    expect(fleet.keyLeaks()).toEqual([]);
    const all = [...Object.values(fleet.keys).flatMap((k) => Object.values(k)), keys.revoked];
    for (const app of fleet.apps) {
      const out = app.handle.process.output();
      for (const k of all) expect(out.includes(k)).toBe(false);
    }
  });
});
