import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, writeRow, type SpilledItems } from '@tally/dynamo';
import { compileRules, defaultRules, type CompiledRules } from '@tally/schema';
import { createTestTable, type DynaliteHandle } from '@tally/testing';
import { useDynalite, useRedis } from '@tally/testing/vitest';
import type { Redis } from 'ioredis';
import { expect } from 'vitest';
import { QueryError, type QueryDeps } from './index';

/** Rules whose every entity is flushed by bucket, products and pages ranked. */
export const rankedRules = compileRules({
  ...defaultRules,
  entities: {
    store: { key: [], flush: { kind: 'bucket' } },
    product: { key: ['product'], flush: { kind: 'bucket' }, rank: true },
    visitor: { key: ['visitor'], flush: { kind: 'bucket' } },
    page: { key: ['page'], flush: { kind: 'bucket' }, rank: true },
  },
});

/** A test file's Redis and dynalite (`useQueryFixture`): read its members in the tests, once they started. */
export interface QueryFixture {
  readonly redis: Redis;
  /** Query deps of `rules` over stores under the Redis `prefix`, on a fresh table (its name in `table`). */
  deps(prefix: string): Promise<QueryDeps & { table: string }>;
}

/**
 * In a test file: a redis-server and dynalite of its own, started before its tests and stopped after them (a DynamoDB
 * client of dynalite destroyed first); one meter counts the file's DynamoDB requests.
 */
export function useQueryFixture(rules: CompiledRules): QueryFixture {
  let redis: Redis;
  let dyn: DynaliteHandle;
  let client: DynamoDBClient;
  const meter = createDynamoMeter();
  useRedis((r) => void (redis = r));
  useDynalite((d) => {
    dyn = d;
    client = createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' });
    return () => client.destroy();
  });
  return {
    get redis() {
      return redis;
    },
    async deps(prefix) {
      const table = await createTestTable(dyn.endpoint);
      return { table, buckets: new BucketStore({ redis, rules, prefix }), dynamo: { client, table, meter }, rules };
    },
  };
}

export interface FlushStoreOptions {
  /** The UpdateItem of a row's write after which the flush crashes (the next flush resumes the row); none: no crash. */
  crashAt?: (pk: string) => number | undefined;
  /** The items the writer process saw spilled (as apps/dynamo-writer keeps them). */
  spilled?: SpilledItems;
}

/** Seals, folds and flushes every due row of the store once, at `now`, as the dynamo-writer does. */
export async function flushStore(deps: QueryDeps, store: string, now: number, opts: FlushStoreOptions = {}): Promise<void> {
  await deps.buckets.seal(store, { now, minAgeMs: 0 });
  await deps.buckets.foldSealed(store, { now });
  for (const { pk } of await deps.buckets.dueRows(store, now)) {
    const out = await deps.buckets.readOutbox(store, pk);
    if (out.entries.length === 0) continue;
    const crashAt = opts.crashAt?.(pk);
    let n = 0;
    try {
      await writeRow(
        {
          ...deps.dynamo,
          ...(opts.spilled ? { spilled: opts.spilled } : {}),
          afterUpdate: () => {
            if (crashAt !== undefined && ++n === crashAt) throw new Error('crash');
          },
        },
        pk,
        out.entries,
      );
      await deps.buckets.ackOutbox(
        store,
        pk,
        out.entries.map((e) => e.field),
        now,
      );
    } catch (err) {
      if ((err as Error).message !== 'crash') throw err;
    }
  }
}

/** The QueryError a promise rejects with (a test fails if it resolves, or rejects with another error). */
export async function queryRefusal(p: Promise<unknown>): Promise<QueryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(QueryError);
  return err as QueryError;
}
