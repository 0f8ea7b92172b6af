import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import type { AppName } from '@tally/config';
import { startDynalite, type DynaliteHandle, type StartDynaliteOptions } from './dynalite';
import { dynamoDbLocalUnavailable, startDynamoDbLocal } from './dynamodb-local';
import { startApp, type AppHandle, type StartAppOptions } from './fleet';
import { startRedis, type RedisHandle, type StartRedisOptions } from './redis';
import { startRedisWithReplica, testRedis, type RedisWithReplica } from './redis-replica';
import { createTestTable, type TestTenants } from './table';

/** What a `ready` callback may return: a clean-up run after the file's tests, before the service stops. */
type Cleanup = void | (() => unknown);

export interface UseRedisOptions {
  /** Options of the redis-server (`startRedis`). */
  server?: StartRedisOptions;
  /** Options of the connection handed to `ready`. */
  connection?: RedisOptions;
  /** FLUSHALL before each test of the file. */
  flushEachTest?: boolean;
}

/**
 * In a test file: a redis-server of its own, started before the file's tests (beforeAll) with a connection to it,
 * both handed to `ready`, and closed and stopped after them (afterAll).
 */
export function useRedis(ready: (redis: Redis, server: RedisHandle) => Cleanup, opts: UseRedisOptions = {}): void {
  let server: RedisHandle | undefined;
  let redis: Redis | undefined;
  let cleanup: Cleanup;
  beforeAll(async () => {
    server = await startRedis(opts.server);
    redis = new Redis(server.url, opts.connection ?? {});
    cleanup = ready(redis, server);
  });
  afterAll(async () => {
    await cleanup?.();
    await redis?.quit();
    await server?.stop();
  });
  if (opts.flushEachTest) beforeEach(async () => void (await redis!.flushall()));
}

/** A DynamoDB emulator a test may run against; `skip` says why it cannot run here. */
export interface DynamoBackend {
  name: string;
  start: () => Promise<{ endpoint: string; stop(): Promise<unknown> }>;
  skip: string | undefined;
}

/** dynalite, and AWS's DynamoDB Local (skipped without java): for `describe.each` over both. */
export function dynamoBackends(): DynamoBackend[] {
  return [
    { name: 'dynalite', start: () => startDynalite(), skip: undefined },
    { name: 'DynamoDB Local', start: startDynamoDbLocal, skip: dynamoDbLocalUnavailable() },
  ];
}

/** In a describe block: `backend` started before its tests (unless skipped), its endpoint handed to `ready`, stopped after. */
export function useDynamoBackend(backend: DynamoBackend, ready: (endpoint: string) => Cleanup): void {
  let stop: (() => Promise<unknown>) | undefined;
  let cleanup: Cleanup;
  beforeAll(async () => {
    if (backend.skip) return;
    const h = await backend.start();
    stop = () => h.stop();
    cleanup = ready(h.endpoint);
  }, 600_000);
  afterAll(async () => {
    await cleanup?.();
    await stop?.();
  });
}

/** A client of a backend that `useDynamoBackendClient` started: read its members in the tests, once it started. */
export interface DynamoBackendClient {
  /** The backend's endpoint. */
  readonly endpoint: string;
  /** The client `connect` made for the endpoint. */
  readonly client: DynamoDBClient;
}

/**
 * In a describe block: `backend` started before its tests (unless skipped, as `useDynamoBackend`) with a client of its
 * endpoint made by `connect`; after the tests the client is destroyed and the backend stopped.
 */
export function useDynamoBackendClient(backend: DynamoBackend, connect: (endpoint: string) => DynamoDBClient): DynamoBackendClient {
  let started: DynamoBackendClient | undefined;
  useDynamoBackend(backend, (endpoint) => {
    const client = connect(endpoint);
    started = { endpoint, client };
    return () => client.destroy();
  });
  const get = (): DynamoBackendClient => {
    if (!started) throw new Error(`${backend.name} is not started: use its client in the tests of the describe block`);
    return started;
  };
  return {
    get endpoint() {
      return get().endpoint;
    },
    get client() {
      return get().client;
    },
  };
}

/**
 * In a test file: dynalite started before the file's tests and handed to `ready` (awaited, so it may create a table
 * first), stopped after them.
 */
export function useDynalite(ready: (dynalite: DynaliteHandle) => Cleanup | Promise<Cleanup>, opts: StartDynaliteOptions = {}): void {
  let dynalite: DynaliteHandle | undefined;
  let cleanup: Cleanup;
  beforeAll(async () => {
    dynalite = await startDynalite(opts);
    cleanup = await ready(dynalite);
  });
  afterAll(async () => {
    await cleanup?.();
    await dynalite?.stop();
  });
}

/** The connections of a test file, each disconnected after its tests. */
export interface TestConnections {
  /** A connection to `url` for the test's own reads and writes (`testRedis`: no retries, errors ignored). */
  connect(url: string): Redis;
  /** Disconnects `connection` (one the test made some other way) after the file's tests too; returns it. */
  disconnectAfter<C extends Redis>(connection: C): C;
}

/**
 * In a test file: a redis-server and a replica of it in sync (`startRedisWithReplica` with `opts`), started before the
 * file's tests and handed to `ready`; after them the connections made through the returned `connect` and
 * `disconnectAfter` are dropped and both servers stop.
 */
export function useRedisWithReplica(ready: (pair: RedisWithReplica) => Cleanup, opts: StartRedisOptions = {}): TestConnections {
  let pair: RedisWithReplica | undefined;
  let cleanup: Cleanup;
  const connections: Redis[] = [];
  const disconnectAfter = <C extends Redis>(connection: C): C => {
    connections.push(connection);
    return connection;
  };
  beforeAll(async () => {
    pair = await startRedisWithReplica(opts);
    cleanup = ready(pair);
  });
  afterAll(async () => {
    await cleanup?.();
    for (const c of connections) c.disconnect();
    await pair?.stop();
  });
  return { connect: (url) => disconnectAfter(testRedis(url)), disconnectAfter };
}

export interface TestStack {
  redisServer: RedisHandle;
  dynalite: DynaliteHandle;
  /** A connection to the redis-server (no per-command retry limit, as BullMQ wants). */
  redis: Redis;
  /** The file's DynamoDB table, with `tenants`. */
  table: string;
  /** What points an app at these services: REDIS_URL, DYNAMODB_ENDPOINT, DYNAMODB_TABLE. */
  env: { REDIS_URL: string; DYNAMODB_ENDPOINT: string; DYNAMODB_TABLE: string };
  /** Starts an app process on these services (`env` under the given one), killed after the file's tests. */
  startApp(app: AppName, opts?: Partial<StartAppOptions>): Promise<AppHandle>;
  /** Runs `close` after the file's tests, before the services stop (queues, clients the tests opened). */
  defer(close: () => unknown): void;
}

/**
 * In a test file: a redis-server and dynalite of its own with a table (and `tenants`), started before the file's
 * tests; after them the apps it started are killed, the deferred clean-ups run and the services stop.
 */
export function useStack(opts: { tenants?: TestTenants } = {}): TestStack {
  const apps: AppHandle[] = [];
  const closes: Array<() => unknown> = [];
  const stack = {
    defer: (close) => void closes.push(close),
    async startApp(app, o = {}) {
      const handle = await startApp(app, { ...o, env: { ...stack.env, ...o.env } });
      apps.push(handle);
      return handle;
    },
  } as TestStack;
  beforeAll(async () => {
    const [redisServer, dynalite] = await Promise.all([startRedis(), startDynalite()]);
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    const table = await createTestTable(dynalite.endpoint, opts.tenants ? { tenants: opts.tenants } : {});
    const env = { REDIS_URL: redisServer.url, DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: table };
    Object.assign(stack, { redisServer, dynalite, redis, table, env });
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.kill()));
    for (const close of closes) await close();
    await stack.redis?.quit();
    await Promise.all([stack.redisServer?.stop(), stack.dynalite?.stop()]);
  });
  return stack;
}
