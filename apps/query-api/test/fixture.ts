import { HistoryMemo } from '@tally/query';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, writeRowWithSketches, type DynamoMeter } from '@tally/dynamo';
import { createLogger } from '@tally/observability';
import { compileRules, defaultRules, rollup, rollupDistinct, type CompiledRules, type NormalizedEvent } from '@tally/schema';
import { createTenant, createTenantDirectory, issueKey, type TenantDb } from '@tally/tenants';
import { createTestTable, startDynalite, startRedis, type DynaliteHandle, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll } from 'vitest';
import { buildApp, type QueryApiApp } from '../src/app';
import type { QueryApiDeps } from '../src/deps';

/** Real Redis + dynalite + a fresh table, the default e-commerce rules, and helpers to seed counts and build the app. */
export interface Fixture {
  redisServer: RedisHandle;
  dynalite: DynaliteHandle;
  redis: Redis;
  client: DynamoDBClient;
  table: string;
  rules: CompiledRules;
  buckets: BucketStore;
  db: TenantDb;
  /** Creates a tenant and returns a read key, an ingest key and a read+ingest key. */
  tenant(store: string, timeZone?: string): Promise<{ read: string; ingest: string; both: string }>;
  /** Applies events to the store's open bucket (Redis only, not yet in DynamoDB). */
  apply(store: string, timeZone: string, events: NormalizedEvent[]): Promise<void>;
  /** Seals, folds and writes every row of the store to DynamoDB (whatever its flush policy), then acks the outbox. */
  flush(store: string): Promise<void>;
  app(overrides?: Partial<QueryApiDeps> & { meter?: DynamoMeter }): Promise<QueryApiApp>;
  close(): Promise<void>;
}

const silentLog = createLogger({ name: 'query-api-test', level: 'silent' });

/** In a test file: the fixture, started before the file's tests (its members are there from then on) and closed after them. */
export function useFixture(): Fixture {
  const f = {} as Fixture;
  beforeAll(async () => void Object.assign(f, await startFixture()));
  afterAll(async () => f.close?.());
  return f;
}

async function startFixture(): Promise<Fixture> {
  const redisServer = await startRedis();
  const dynalite = await startDynalite();
  const table = await createTestTable(dynalite.endpoint);
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
  const client = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const rules = compileRules(defaultRules);
  const buckets = new BucketStore({ redis, rules, prefix: 'q' });
  const db: TenantDb = { dynamo: client, table };
  // Bucket seqs are bucket open times: keep them strictly increasing whatever the test does.
  let clock = Date.now();
  const tick = () => (clock += 1_000);
  let batch = 0;
  const apps: QueryApiApp[] = [];

  return {
    redisServer,
    dynalite,
    redis,
    client,
    table,
    rules,
    buckets,
    db,
    async tenant(store, timeZone = 'UTC') {
      await createTenant(db, store, { timeZone });
      return {
        read: await issueKey(db, store, ['read'], 'dashboard'),
        ingest: await issueKey(db, store, ['ingest'], 'web shop'),
        both: await issueKey(db, store, ['ingest', 'read'], 'both'),
      };
    },
    async apply(store, timeZone, events) {
      await buckets.registerStore(store);
      await buckets.sketches.add(store, rollupDistinct(rules, store, timeZone, events));
      const r = await buckets.apply(store, `batch-${++batch}`, rollup(rules, store, timeZone, events), {
        now: tick(),
        dedupeTtlSeconds: 3_600,
      });
      if (!r.applied) throw new Error('batch not applied');
    },
    async flush(store) {
      await buckets.seal(store, { now: tick(), minAgeMs: 0 });
      await buckets.foldSealed(store, { now: tick() });
      const meter = createDynamoMeter();
      for (const { pk } of await buckets.dueRows(store, Number.MAX_SAFE_INTEGER)) {
        const out = await buckets.readOutbox(store, pk);
        if (out.entries.length === 0) continue;
        const [live] = await buckets.sketches.read(store, [pk]);
        const r = await writeRowWithSketches(
          { client, table, meter },
          (g, w) => buckets.sketches.union(store, g, w),
          pk,
          out.entries,
          live!,
        );
        await buckets.sketches.ack(store, pk, r.sketchesWritten);
        await buckets.ackOutbox(
          store,
          pk,
          out.entries.map((e) => e.field),
          tick(),
        );
      }
    },
    async app(overrides = {}) {
      const registry = overrides.registry ?? new Registry();
      const meter = overrides.meter ?? createDynamoMeter(registry);
      const app = await buildApp({
        log: silentLog,
        registry,
        query: { buckets, dynamo: { client, table, meter }, rules, historyMemo: new HistoryMemo() },
        directory: createTenantDirectory({ dynamo: client, table, cacheTtlMs: 0 }),
        limits: { maxEntitiesPerRequest: 100, sessionIdleSeconds: 1_800 },
        dashboardDir: '/nonexistent/dashboard/dist',
        ready: async () => (await redis.ping()) === 'PONG',
        ...overrides,
      });
      apps.push(app);
      return app;
    },
    async close() {
      for (const a of apps) await a.close();
      await redis.quit();
      client.destroy();
      await dynalite.stop();
      await redisServer.stop();
    },
  };
}

/** Events as the aggregator gets them (validated, ts in ms, value a decimal string); a dimension left undefined is absent. */
const event = (type: string, ts: string, dims: Record<string, string | undefined>, value?: string): NormalizedEvent => ({
  type,
  ts: Date.parse(ts),
  dims: Object.fromEntries(Object.entries(dims).filter(([, v]) => v !== undefined)) as Record<string, string>,
  ...(value === undefined ? {} : { value }),
});
export const view = (ts: string, product: string, visitor?: string) => event('view', ts, { product, visitor });
export const order = (ts: string, value: string, visitor?: string) => event('order', ts, { visitor }, value);
export const orderItem = (ts: string, product: string, value: string, visitor?: string) =>
  event('order_item', ts, { product, visitor }, value);
export const times = <T>(n: number, f: () => T): T[] => Array.from({ length: n }, f);

/** Authorization header of a key. */
/** The problem body of a 400 for the request member `field`. */
export const badRequest = (field: string, detail: unknown) => ({
  type: 'about:blank',
  title: 'Bad Request',
  status: 400,
  code: 'TALLY_ERR_BAD_REQUEST',
  field,
  detail,
});

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
