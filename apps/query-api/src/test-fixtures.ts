import type { OutgoingHttpHeaders } from 'node:http';
import { beforeAll } from 'vitest';
import { bearer, type Fixture } from '../test/fixture';
import type { QueryApiApp } from './app';
import type { QueryApiDeps } from './deps';

/** The store a test file reads, once it is seeded (its members are there from then on). */
export interface SeededStore {
  /** The read key of the store's tenant. */
  key: string;
  /** The app on the file's query clock. */
  app: QueryApiApp;
  /** GETs `url` with `key` (the store's read key unless given): the answer's status, JSON body and headers. */
  get(url: string, key?: string): Promise<{ status: number; body: any; headers: OutgoingHttpHeaders }>;
}

/**
 * In a test file, before its tests (once the fixture `f` started): the tenant `store` created (in `timeZone`, UTC
 * unless given), `seed` run (the counts the tests read) and the app built on the query clock `now`, with `deps`.
 */
export function useSeededStore(
  f: Fixture,
  store: string,
  o: { timeZone?: string; now: number; seed: () => Promise<void>; deps?: Partial<QueryApiDeps> },
): SeededStore {
  const s = {
    async get(url: string, key = s.key) {
      const res = await s.app.inject({ method: 'GET', url, headers: bearer(key) });
      return { status: res.statusCode, body: res.json(), headers: res.headers };
    },
  } as SeededStore;
  beforeAll(async () => {
    s.key = (await f.tenant(store, o.timeZone)).read;
    await o.seed();
    s.app = await f.app({ now: () => o.now, ...o.deps });
  });
  return s;
}
