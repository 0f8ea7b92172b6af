import { BucketStore } from '@tally/buckets';
import { createDynamoClient } from '@tally/dynamo';
import { compileRules, defaultRules } from '@tally/schema';
import { createTenantAdmin } from '@tally/tenants';
import {
  aofWritten,
  createTestTable,
  startApp,
  startDynalite,
  startRedis,
  waitFor,
  type AppHandle,
  type DynaliteHandle,
  type RedisHandle,
} from '@tally/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The real collector and aggregator, at the production log level, while Redis is down under a stream of requests
// (valid ones, and a flood of random keys): each prints a bounded number of lines, throttled per distinct error,
// not one (with a stack) per request or per reconnect attempt; then both recover and count exactly.

const OUTAGE_MS = 12_000;
/** Lines one app may print over the whole outage: a few distinct errors, each once per 10 s window. */
const MAX_LINES = 40;

let redis: RedisHandle;
let dynalite: DynaliteHandle;
let collector: AppHandle;
let aggregator: AppHandle;
let key = '';
const lines = { collector: [] as string[], aggregator: [] as string[] };

beforeAll(async () => {
  [redis, dynalite] = await Promise.all([startRedis(), startDynalite()]);
  const table = await createTestTable(dynalite.endpoint);
  const dynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const admin = createTenantAdmin({ dynamo, table });
  await admin.createTenant('FLOODLOG');
  key = await admin.issueKey('FLOODLOG', ['ingest'], 'log flood');
  dynamo.destroy();
  const env = { REDIS_URL: redis.url, DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: table, LOG_LEVEL: 'info', BUCKET_SECONDS: '1' };
  [collector, aggregator] = await Promise.all([
    startApp('collector', { env, onLine: (l) => lines.collector.push(l) }),
    startApp('bucket-aggregator', { env, onLine: (l) => lines.aggregator.push(l) }),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([collector?.kill(), aggregator?.kill()]);
  await Promise.all([redis?.stop(), dynalite?.stop()]);
});

const views = (n: number) =>
  JSON.stringify(
    Array.from({ length: n }, (_, i) => ({ type: 'view', ts: new Date(Date.now() - 5_000).toISOString(), dims: { product: `P${i % 3}` } })),
  );
const send = (body: string, bearer = key) =>
  fetch(`${collector.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
    body,
    signal: AbortSignal.timeout(10_000),
  });
const randomKey = () =>
  `tly_${Buffer.from(crypto.getRandomValues(new Uint8Array(32)))
    .toString('base64url')
    .slice(0, 43)}`;

describe('log floods', () => {
  it('with Redis down under a stream of requests, the collector and the aggregator print a bounded number of lines, then recover', async () => {
    const inspect = new Redis(redis.url, { maxRetriesPerRequest: null, lazyConnect: true });
    const buckets = new BucketStore({ redis: inspect, rules: compileRules(defaultRules) });
    const counted = async () => {
      const [row] = await buckets.snapshot('FLOODLOG', ['FLOODLOG']);
      return row!.entries.filter((e) => e.metric === 'v').reduce((s, e) => s + e.value, 0n);
    };
    try {
      expect((await send(views(10))).status).toBe(202);
      await waitFor(async () => (await counted()) === 10n, { timeoutMs: 30_000, message: 'the first batch applied' });
      // appendfsync everysec: the SIGKILL comes once the batch's writes are in the AOF file (see aofWritten).
      await waitFor(async () => aofWritten(await inspect.info('persistence')), { message: 'the AOF written' });
      inspect.disconnect();

      await redis.kill('SIGKILL');
      const from = { collector: lines.collector.length, aggregator: lines.aggregator.length };
      const statuses = new Map<number, number>();
      const until = Date.now() + OUTAGE_MS;
      let requests = 0;
      while (Date.now() < until) {
        const round = await Promise.all([send(views(5)), send(views(5)), send(views(1), randomKey()), send(views(1), randomKey())]);
        for (const r of round) {
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status === 503) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
          await r.body?.cancel();
        }
        requests += round.length;
      }
      const printed = { collector: lines.collector.slice(from.collector), aggregator: lines.aggregator.slice(from.aggregator) };
      const report = `${requests} requests (${JSON.stringify(Object.fromEntries(statuses))}); lines printed: collector ${printed.collector.length}, aggregator ${printed.aggregator.length}`;
      console.info(`log flood over ${OUTAGE_MS / 1000} s with Redis down: ${report}`);
      // Valid keys get 503 (Redis holds the queue), random keys 401: never a 500.
      expect([...statuses.keys()].sort()).toEqual([401, 503]);
      expect(requests).toBeGreaterThan(4 * MAX_LINES);
      expect(printed.collector.length, `${report}\n${printed.collector.join('\n')}`).toBeLessThanOrEqual(MAX_LINES);
      expect(printed.aggregator.length, `${report}\n${printed.aggregator.join('\n')}`).toBeLessThanOrEqual(MAX_LINES);
      // No stack traces: these are expected outages, not bugs.
      expect([...printed.collector, ...printed.aggregator].filter((l) => /"stack":"[^"]/.test(l))).toEqual([]);

      // Redis back (its AOF kept the first batch): the collector takes events again and the aggregator counts them.
      await redis.restart();
      await waitFor(async () => (await send(views(7))).status === 202, {
        timeoutMs: 60_000,
        intervalMs: 500,
        message: 'the collector takes events again',
      });
      await inspect.connect();
      await waitFor(async () => (await counted()) >= 17n, { timeoutMs: 60_000, message: 'the batch after the outage applied' });
      // Exactly the accepted batches: the first, and the one 202 after the outage (the refused ones never counted).
      expect(await counted()).toBe(17n);
    } finally {
      inspect.disconnect();
    }
  }, 180_000);
});
