import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AppName } from '@tally/config';
import { closeQueues, createQueues, enqueue, QUEUE, type TallyQueues } from '@tally/queues';
import { defaultRules } from '@tally/schema';
import {
  createTestTenants,
  freePort,
  metricValue,
  startDynalite,
  startProcess,
  startRedis,
  waitFor,
  type DynaliteHandle,
  type ProcessHandle,
  type RedisHandle,
} from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBundles } from './build';

// The bundles the images run, started from a directory outside the repository (no node_modules to fall back
// on), exactly as the Dockerfile's runtime stages lay them out: main.mjs, its map, and node_modules for externals.
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const APPS: readonly AppName[] = ['collector', 'query-api', 'bucket-aggregator', 'dynamo-writer'];

let outDir: string;
let redisServer: RedisHandle;
let dyn: DynaliteHandle;
let redis: Redis;
let queues: TallyQueues;
let table: string;
let env: Record<string, string>;
const running = new Map<AppName, { proc: ProcessHandle; url: string }>();

beforeAll(async () => {
  outDir = mkdtempSync(join(tmpdir(), 'tally-bundles-'));
  [redisServer, dyn] = await Promise.all([
    startRedis(),
    startDynalite(),
    buildBundles({ repoRoot, outDir, only: [...APPS, 'create-table', 'dlq', 'tenants'] }),
  ]);
  table = `tally_bundles_${Date.now().toString(36)}`;
  redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  queues = createQueues(redis);
  // Every row flushed after every bucket, so one batch reaches DynamoDB within seconds.
  const rules = structuredClone(defaultRules) as { entities: Record<string, { flush: unknown }> };
  for (const e of Object.values(rules.entities)) e.flush = { kind: 'bucket' };
  const rulesFile = join(outDir, 'rules.json');
  writeFileSync(rulesFile, JSON.stringify(rules));
  const dashboard = join(outDir, 'dashboard');
  mkdirSync(dashboard);
  writeFileSync(join(dashboard, 'index.html'), '<!doctype html><title>bundled dashboard</title>');
  env = {
    REDIS_URL: redisServer.url,
    DYNAMODB_ENDPOINT: dyn.endpoint,
    DYNAMODB_TABLE: table,
    BUCKET_SECONDS: '1',
    JOB_LOCK_MS: '2000',
    RULES_FILE: rulesFile,
    DASHBOARD_DIR: dashboard,
    HTTP_HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
  };
}, 120_000);

afterAll(async () => {
  await Promise.all([...running.values()].map((r) => r.proc.kill('SIGKILL')));
  await closeQueues(queues);
  await redis.quit();
  await Promise.all([dyn.stop(), redisServer.stop()]);
  rmSync(outDir, { recursive: true, force: true });
});

async function startBundle(name: AppName): Promise<{ proc: ProcessHandle; url: string }> {
  const port = await freePort();
  const dir = join(outDir, name);
  const proc = await startProcess(process.execPath, ['--enable-source-maps', 'main.mjs'], {
    cwd: dir,
    name: `${name} bundle`,
    env: { ...env, HTTP_PORT: String(port) },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (proc.exit) throw new Error(`${name} bundle exited: ${JSON.stringify(proc.exit)}\n${proc.output()}`);
      return (await fetch(`${url}/healthz`)).ok;
    },
    { timeoutMs: 30_000, intervalMs: 100, message: `${name} bundle to answer /healthz` },
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.output()}`);
  });
  const r = { proc, url };
  running.set(name, r);
  return r;
}

const metricsOf = async (name: AppName) => (await fetch(`${running.get(name)!.url}/metrics`)).text();

describe('bundles (dist/<app>/main.mjs)', () => {
  it('are self-contained: main.mjs, a source map, node_modules only for declared externals', () => {
    for (const app of APPS) {
      expect(existsSync(join(outDir, app, 'main.mjs'))).toBe(true);
      expect(existsSync(join(outDir, app, 'main.mjs.map'))).toBe(true);
    }
    expect(existsSync(join(outDir, 'query-api', 'node_modules', '@fastify', 'swagger-ui', 'static', 'logo.svg'))).toBe(true);
    expect(existsSync(join(outDir, 'collector', 'node_modules'))).toBe(false);
  });

  it('create-table creates the table and is idempotent', async () => {
    for (const expected of [/created table/, /already exists/]) {
      const p = await startProcess(process.execPath, ['main.mjs'], { cwd: join(outDir, 'create-table'), env });
      expect(await p.exited).toEqual({ code: 0, signal: null });
      expect(p.output()).toMatch(expected);
    }
  });

  it('the operator tools answer --help without a backend, and run their commands from their split chunks', async () => {
    const tool = async (name: string, args: string[], extra: Record<string, string> = {}) => {
      const p = await startProcess(process.execPath, ['main.mjs', ...args], { cwd: join(outDir, name), env: { ...env, ...extra } });
      return { exit: await p.exited, output: p.output() };
    };
    for (const name of ['dlq', 'tenants']) {
      const help = await tool(name, ['--help'], { REDIS_URL: '', DYNAMODB_ENDPOINT: '' });
      expect(help.exit).toEqual({ code: 0, signal: null });
      expect(help.output).toMatch(new RegExp(`^usage: ${name} <command>`));
    }
    expect(await tool('dlq', ['list'])).toEqual({
      exit: { code: 0, signal: null },
      output: `[stderr] tally: using Redis ${redisServer.url} (REDIS_URL)\nevents: 0 failed; seal: 0 failed; dynamo-writes: 0 failed; maintenance: 0 failed`,
    });
    const show = await tool('tenants', ['show', 'NOPE']);
    expect(show.exit).toEqual({ code: 1, signal: null });
    expect(show.output).toContain('tenant NOPE does not exist');
  });

  it('start, serve /healthz /readyz /metrics, and carry one batch from the queue to DynamoDB', async () => {
    await Promise.all(APPS.map((a) => startBundle(a)));
    for (const app of APPS) {
      const ready = await waitFor(async () => (await fetch(`${running.get(app)!.url}/readyz`)).status === 200, {
        timeoutMs: 15_000,
        message: `${app} ready`,
      });
      expect(ready).toBe(true);
      const text = await metricsOf(app);
      // prom-client's default process metrics, prefixed.
      expect(text).toMatch(/^tally_process_cpu_seconds_total\{app="[a-z-]+"\} /m);
      expect(text).toMatch(/^tally_nodejs_eventloop_lag_seconds/m);
    }
    // Queue depth by state, from every app that holds queues.
    for (const app of ['bucket-aggregator', 'dynamo-writer'] as const) {
      const text = await metricsOf(app);
      for (const queue of ['events', 'seal', 'dynamo-writes'])
        expect(text).toContain(`tally_queue_jobs{queue="${queue}",state="failed",app="${app}"}`);
    }
    expect(await metricsOf('collector')).toContain('tally_queue_jobs{queue="events",state="waiting",app="collector"}');
    expect(await metricsOf('bucket-aggregator')).toMatch(/^tally_flush_lag_seconds\{app="bucket-aggregator"\} /m);

    // The dashboard and the Swagger UI assets come from files next to the bundle.
    const page = await fetch(`${running.get('query-api')!.url}/`, { headers: { accept: 'text/html' } });
    expect(await page.text()).toContain('bundled dashboard');
    const css = await fetch(`${running.get('query-api')!.url}/docs/static/swagger-ui.css`);
    expect(css.status).toBe(200);
    await css.arrayBuffer(); // read it all: an unread response keeps its connection busy

    await createTestTenants(dyn.endpoint, table, ['S']); // the table is create-table's (above)
    const ts = Date.now();
    await enqueue(queues, QUEUE.events, {
      batchId: 'bundle-1',
      store: 'S',
      receivedAt: ts,
      events: Array.from({ length: 3 }, () => ({ type: 'view', ts, dims: { product: 'P1' } })),
    });
    await waitFor(async () => metricValue(await metricsOf('dynamo-writer'), 'tally_dynamodb_consumed_write_units_total') > 0, {
      timeoutMs: 30_000,
      message: 'the writer bundle to write to DynamoDB',
    });
    expect(metricValue(await metricsOf('bucket-aggregator'), 'tally_events_applied_total')).toBe(3);
    expect(
      metricValue(await metricsOf('dynamo-writer'), 'tally_dynamodb_requests_total', { operation: 'UpdateItem', outcome: 'ok' }),
    ).toBeGreaterThan(0);
  });

  it('stop gracefully on SIGTERM (exit 0)', async () => {
    for (const app of APPS) {
      const { proc } = running.get(app)!;
      const exit = await proc.kill('SIGTERM', { timeoutMs: 25_000 });
      expect({ app, exit }).toEqual({ app, exit: { code: 0, signal: null } });
      running.delete(app);
    }
  });
});
