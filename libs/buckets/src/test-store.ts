import { compileRules, defaultRules } from '@tally/schema';
import { useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { BucketStore } from './bucket-store';

/** The rules of the BucketStore tests: one entity per flush policy, products and pages ranked. */
export const testRules = compileRules({
  ...defaultRules,
  entities: {
    store: { key: [], flush: { kind: 'bucket' } },
    product: { key: ['product'], flush: { kind: 'every', minutes: 60 }, rank: true },
    visitor: { key: ['visitor'], flush: { kind: 'idle', idleMinutes: 30, maxAgeMinutes: 1440 } },
    page: { key: ['page'], flush: { kind: 'every', minutes: 60 }, rank: true },
  },
});

/** For a test file: a BucketStore (prefix `t`, testRules) on a redis-server of its own, emptied before each test. */
export function useBucketStore(ready: (store: BucketStore, redis: Redis) => void): void {
  useRedis((redis) => ready(new BucketStore({ redis, rules: testRules, prefix: 't' }), redis), { flushEachTest: true });
}
