import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { startDynalite, type DynaliteHandle, type StartDynaliteOptions } from './dynalite';
import { startRedis, type RedisHandle, type StartRedisOptions } from './redis';

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

/** In a test file: dynalite started before the file's tests and handed to `ready`, stopped after them. */
export function useDynalite(ready: (dynalite: DynaliteHandle) => Cleanup, opts: StartDynaliteOptions = {}): void {
  let dynalite: DynaliteHandle | undefined;
  let cleanup: Cleanup;
  beforeAll(async () => {
    dynalite = await startDynalite(opts);
    cleanup = ready(dynalite);
  });
  afterAll(async () => {
    await cleanup?.();
    await dynalite?.stop();
  });
}
