import { createDynamoClient } from '@tally/dynamo';
import { createTenantAdmin } from '@tally/tenants';
import {
  createTestTable,
  freePort,
  sleep,
  startApp,
  startDynalite,
  startRedis,
  waitFor,
  withDeadline,
  type AppHandle,
  type DynaliteHandle,
  type RedisHandle,
} from '@tally/testing';
import type { AppName } from '@tally/config';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The four apps started while their Redis is not there yet (a fleet whose Redis comes up last, or restarts with
// it): each answers /healthz and /metrics at once and /readyz 503, prints only structured, throttled lines (no bare
// errors from a connection or queue without a listener), stops cleanly on SIGTERM, and once Redis starts takes,
// applies and answers a batch.

const APPS: AppName[] = ['collector', 'bucket-aggregator', 'dynamo-writer', 'query-api'];
const WAIT_MS = 8_000;
/** Lines one app may print while Redis is missing: a few distinct errors, each once per 10 s window. */
const MAX_LINES = 20;

let dynalite: DynaliteHandle;
let redis: RedisHandle | undefined;
let redisPort = 0;
const apps = new Map<AppName, AppHandle>();
const lines = new Map<AppName, string[]>(APPS.map((a) => [a, []]));
const keys = { ingest: '', read: '' };

beforeAll(async () => {
  dynalite = await startDynalite();
  const table = await createTestTable(dynalite.endpoint);
  const dynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table });
  await admin.createTenant('LATEREDIS');
  keys.ingest = await admin.issueKey('LATEREDIS', ['ingest'], 'late redis');
  keys.read = await admin.issueKey('LATEREDIS', ['read'], 'late redis');
  dynamo.destroy();
  redisPort = await freePort();
  const env = {
    REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    DYNAMODB_ENDPOINT: dynalite.endpoint,
    DYNAMODB_TABLE: table,
    LOG_LEVEL: 'info',
    BUCKET_SECONDS: '1',
  };
  // startApp waits for /healthz: an app that needs Redis before it serves fails here.
  const started = await Promise.all(
    APPS.map((app) => startApp(app, { env, timeoutMs: 20_000, onLine: (l, stream) => lines.get(app)!.push(`${stream}: ${l}`) })),
  );
  for (const [i, app] of APPS.entries()) apps.set(app, started[i]!);
}, 120_000);

afterAll(async () => {
  await Promise.all([...apps.values()].map((a) => a.kill()));
  await Promise.all([redis?.stop(), dynalite?.stop()]);
});

const status = async (url: string) => {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  await res.body?.cancel();
  return res.status;
};

/** Says each phase with its time since the test began, so a run that times out shows where it stood. */
const t0 = { at: 0 };
const phase = (what: string) => console.log(`redis-late: ${what} (${((Date.now() - t0.at) / 1000).toFixed(1)} s)`);

describe('apps started before their Redis', () => {
  it('serve health and metrics, are not ready, print structured throttled lines only, then work once Redis is up', async () => {
    t0.at = Date.now();
    try {
      // Short of the test's own timeout, so a step that hangs still fails here, with the apps' last lines below.
      await withDeadline(withRedisLate(), 110_000, 'the test');
    } catch (err) {
      for (const [app, handle] of apps)
        console.log(`${app}, its last lines:\n${handle.process.output().split('\n').slice(-15).join('\n')}`);
      throw err;
    }
  }, 120_000);
});

async function withRedisLate() {
  await sleep(WAIT_MS);
  for (const [app, handle] of apps) {
    expect(await status(`${handle.url}/healthz`), app).toBe(200);
    expect(await status(`${handle.url}/metrics`), app).toBe(200);
    expect(await status(`${handle.url}/readyz`), app).toBe(503);
    const printed = lines.get(app)!;
    const report = `${app} printed ${printed.length} lines:\n${printed.join('\n')}`;
    expect(printed.length, report).toBeLessThanOrEqual(MAX_LINES);
    // Every line is the app's JSON log (pino), none a bare "Error: connect ECONNREFUSED" or "[ioredis] Unhandled error event".
    expect(
      printed.filter((l) => !/^std(out|err): \{".*\}$/.test(l)),
      report,
    ).toEqual([]);
  }

  // SIGTERM while Redis is missing: a clean exit (code 0, not a step over its deadline and a SIGKILL), then back.
  for (const app of APPS) {
    const handle = apps.get(app)!;
    expect(await handle.process.kill('SIGTERM', { timeoutMs: 15_000 }), app).toEqual({ code: 0, signal: null });
    expect(handle.process.output(), app).not.toMatch(/shutdown step (overran its deadline|failed)/);
    await handle.restart();
    phase(`${app} stopped cleanly and started again`);
  }

  redis = await startRedis({ port: redisPort });
  phase('Redis started');
  const collector = apps.get('collector')!;
  for (const [app, handle] of apps) {
    await waitFor(async () => (await status(`${handle.url}/readyz`)) === 200, { timeoutMs: 30_000, message: `${app} ready` });
    phase(`${app} ready`);
  }
  const ts = Date.now() - 5_000;
  const res = await fetch(`${collector.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${keys.ingest}`, 'content-type': 'application/json' },
    body: JSON.stringify(Array.from({ length: 3 }, (_, i) => ({ type: 'view', ts, dims: { product: `P${i}` } }))),
    signal: AbortSignal.timeout(10_000),
  });
  expect(res.status).toBe(202);
  phase('the batch accepted');
  const query = apps.get('query-api')!;
  const today = async () => {
    const r = await fetch(`${query.url}/v1/series?entity=store&metrics=ViewCount&range=last7d`, {
      headers: { authorization: `Bearer ${keys.read}` },
      signal: AbortSignal.timeout(10_000),
    });
    return r.ok ? ((await r.json()) as { totals: { ViewCount: number } }).totals.ViewCount : -1;
  };
  await waitFor(async () => (await today()) === 3, { timeoutMs: 30_000, message: 'the batch counted' });
  phase('the batch counted');
}
