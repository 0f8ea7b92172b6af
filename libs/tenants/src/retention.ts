import { parsePk, retentionExpiry } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import type { TenantDirectory } from './directory';
import { TenantsUnavailableError } from './errors';

/**
 * The writer's expiryOf: per row, the TTL its items get with every update (libs/dynamo RowWriterDeps.expiresAt):
 * - a number (epoch seconds, retentionExpiry: never more than a year past, OLDEST_STAMP_DAYS, so that DynamoDB's TTL
 *   still deletes the months of an event accepted years late) for the items of a visitor row (a row of an entity
 *   whose key includes the visitor's dimension, `rules.visitorKeyedEntities`: the rows an erasure erases, those of an
 *   entity keyed by the visitor alone, and those keyed by it and another dimension, which a TTL reaches as well) when
 *   its store keeps visitor history for a number of months (historyMonths);
 * - `null`, no stamp (the writer REMOVEs any the item has: a tombstone's, or an earlier retention's), for every other
 *   row, and for the visitor rows of a store keeping history for ever;
 * - `undefined`, not known (the item keeps the stamp it has; the next write sets it; queries cut at the retention
 *   start anyway), when the store has no tenant item (deleted).
 * A lookup that fails throws TenantsUnavailableError, and the flush waits as for DynamoDB itself: written with the
 * stamp it has, a visitor's first item after an erasure would keep the tombstone's 30-day stamp, and its new counts
 * would go with it.
 * It stamps the setting its directory holds (cached: a change reaches it within the directory's cacheTtlMs); the
 * items written before a change of historyMonths are restamped by restampRetention (retention-change.ts), which waits
 * that long first.
 */
export function visitorExpiry(
  tenants: Pick<TenantDirectory, 'tenant'>,
  rules: Pick<CompiledRules, 'visitorKeyedEntities'>,
  now: () => number = Date.now,
): (store: string, pk: string) => Promise<(sk: string) => number | null | undefined> {
  return async (store, pk) => {
    if (!isVisitorRow(rules, pk)) return () => null;
    const tenant = await tenants.tenant(store).catch((err: unknown) => {
      throw err instanceof TenantsUnavailableError
        ? err
        : new TenantsUnavailableError(`the tenant of store ${store} cannot be looked up: ${(err as Error).message}`);
    });
    if (!tenant) return () => undefined;
    const months = tenant.historyMonths;
    if (months === undefined) return () => null;
    const at = now();
    return (sk) => retentionExpiry(sk, months, at, tenant.timeZone) ?? null;
  };
}

/**
 * Whether `pk` is a visitor row, whose items a store's historyMonths expires: a row of an entity whose key includes
 * the visitor's dimension (`rules.visitorKeyedEntities`), alone or with another.
 */
export function isVisitorRow(rules: Pick<CompiledRules, 'visitorKeyedEntities'>, pk: string): boolean {
  const { entity } = parsePk(pk);
  return entity !== undefined && rules.visitorKeyedEntities.has(entity);
}
