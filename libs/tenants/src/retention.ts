import { parsePk, retentionExpiry } from '@tally/key-layout';
import type { TenantDirectory } from './directory';

/**
 * The writer's expiryOf: the items of a visitor row get a DynamoDB TTL when their store keeps visitor history
 * for a number of months (historyMonths); every other row, and any row while the tenant cannot be looked up, none
 * (the next write sets it; queries cut at the retention start anyway). It stamps the setting its directory holds
 * (cached: a change reaches it within the directory's cacheTtlMs); the items written before a change of
 * historyMonths are restamped by restampRetention (retention-change.ts), which waits that long first.
 */
export function visitorExpiry(
  tenants: Pick<TenantDirectory, 'tenant'>,
  now: () => number = Date.now,
): (store: string, pk: string) => Promise<((sk: string) => number | undefined) | undefined> {
  return async (store, pk) => {
    if (parsePk(pk).entity !== 'visitor') return undefined;
    const tenant = await tenants.tenant(store).catch(() => undefined);
    const months = tenant?.historyMonths;
    if (months === undefined) return undefined;
    const at = now();
    return (sk) => retentionExpiry(sk, months, at, tenant!.timeZone);
  };
}
