import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { STORE_ID_PATTERN } from '@tally/key-layout';
import { getTenant, type TenantInfo } from './admin';
import { TenantsUnavailableError } from './errors';
import { bool, KEY_SK, keyPk, S, scopesOf, str } from './items';
import { hashKey, looksLikeKey, type Scope } from './keys';

/** The subset of a pino logger the directory uses. */
interface DirectoryLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface TenantDirectoryOptions {
  dynamo: DynamoDBClient;
  table: string;
  /** How long a lookup (found, not found or revoked) is trusted; a revoked key stops working within this. */
  cacheTtlMs: number;
  log?: DirectoryLog;
  /**
   * After a failed lookup, how long before DynamoDB is asked again (in the background for known ids; unknown ids
   * fail at once meanwhile). Default 1000.
   */
  retryAfterFailureMs?: number;
  /** Cached keys and tenants, each; the oldest are dropped beyond it. Default 100,000. */
  maxEntries?: number;
  /** The clock that ages cache entries and times retries (ms since the epoch). Default `Date.now`. */
  now?: () => number;
}

/** A key's store and scopes, with what the apps need of its tenant. */
export interface Principal extends DirectoryTenant {
  scopes: Scope[];
}

export interface TenantDirectory {
  /** The store, scopes and time zone of a key; undefined for an unknown or revoked key (or a deleted tenant). */
  authenticate(key: string): Promise<Principal | undefined>;
  /**
   * A store's tenant; undefined when the store has none (or is being deleted). With `fresh`, DynamoDB is asked now
   * whatever the cache holds, and a failed lookup throws TenantsUnavailableError rather than answering from the
   * cache: for a caller about to act on "no such store" (a tenant created a moment ago must be seen).
   */
  tenant(store: string, opts?: { fresh?: boolean }): Promise<DirectoryTenant | undefined>;
}

/** What the apps need of a tenant: its store, time zone, currency, ingest budget and visitor-history retention. */
type DirectoryTenant = Omit<TenantInfo, 'createdAt' | 'deletingAt'>;

interface KeyRecord {
  store: string;
  scopes: Scope[];
  revoked: boolean;
}

/**
 * Key and tenant lookups for any app, cached for `cacheTtlMs`: while DynamoDB answers, a value older than the TTL
 * is looked up again before it is used, so a revoked key fails within the TTL. When DynamoDB fails, the last value
 * known for that key or store is served at once (an outage of DynamoDB never stops or slows intake) and refreshed
 * in the background; when nothing is known, TenantsUnavailableError is thrown. Concurrent lookups of one id share
 * one request.
 */
export function createTenantDirectory(opts: TenantDirectoryOptions): TenantDirectory {
  const retryAfterFailureMs = opts.retryAfterFailureMs ?? 1_000;
  const maxEntries = opts.maxEntries ?? 100_000;
  const now = opts.now ?? (() => Date.now());
  /** degraded: the last lookup failed; until: no new lookup for unknown ids before this (ms). */
  const outage = { until: 0, degraded: false };

  const keys = cache<KeyRecord | undefined>('key', async (hash) => {
    const out = await opts.dynamo.send(
      new GetItemCommand({ TableName: opts.table, Key: { pk: S(keyPk(hash)), sk: S(KEY_SK) }, ConsistentRead: true }),
    );
    const item = out.Item;
    const store = item && str(item, 'store');
    if (!item || !store) return undefined;
    return { store, scopes: scopesOf(item), revoked: bool(item, 'revoked') };
  });

  const tenants = cache<DirectoryTenant | undefined>('tenant', async (store) => {
    const t = await getTenant({ dynamo: opts.dynamo, table: opts.table }, store);
    if (!t || t.deletingAt) return undefined; // a store being deleted is unknown
    const { createdAt: _createdAt, ...tenant } = t;
    return tenant;
  });

  function cache<V>(kind: 'key' | 'tenant', fetch: (id: string) => Promise<V>) {
    const entries = new Map<string, { value: V; at: number }>();
    const inflight = new Map<string, Promise<V>>();

    const remember = (id: string, value: V) => {
      entries.delete(id);
      entries.set(id, { value, at: now() });
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value as string);
    };

    /** One lookup per id at a time; the outcome updates the cache and the outage state. */
    const lookup = (id: string): Promise<V> => {
      let pending = inflight.get(id);
      if (!pending) {
        pending = fetch(id).then(
          (value) => {
            remember(id, value);
            if (outage.degraded) {
              outage.degraded = false;
              opts.log?.info({ table: opts.table }, 'DynamoDB answers key lookups again');
            }
            return value;
          },
          (err: unknown) => {
            outage.until = now() + retryAfterFailureMs;
            if (!outage.degraded) {
              outage.degraded = true;
              opts.log?.warn({ err, table: opts.table }, 'DynamoDB key lookup failed; serving last-known keys and tenants');
            }
            throw err;
          },
        );
        pending = pending.finally(() => inflight.delete(id));
        inflight.set(id, pending);
      }
      return pending;
    };

    return async (id: string, fresh = false): Promise<V> => {
      const known = fresh ? undefined : entries.get(id);
      if (known && now() - known.at < opts.cacheTtlMs) return known.value;
      if (outage.degraded) {
        // DynamoDB failed lately: answer from what is known at once, and refresh in the background (at most
        // once per retry period), so an outage — even one that hangs — does not slow intake down.
        const retry = now() >= outage.until;
        if (known) {
          if (retry) lookup(id).catch(() => {});
          return known.value;
        }
        if (!retry) throw unavailable(kind);
      }
      try {
        return await lookup(id);
      } catch (err) {
        const last = fresh ? undefined : entries.get(id);
        if (last) return last.value;
        throw unavailable(kind, err);
      }
    };
  }

  function unavailable(kind: 'key' | 'tenant', cause?: unknown): TenantsUnavailableError {
    return new TenantsUnavailableError(
      `cannot look up this ${kind === 'key' ? 'API key' : 'tenant'}: DynamoDB is unavailable and it is not cached`,
      { cause },
    );
  }

  return {
    async authenticate(key) {
      if (typeof key !== 'string' || !looksLikeKey(key)) return undefined;
      const record = await keys(hashKey(key));
      if (!record || record.revoked) return undefined;
      const tenant = await tenants(record.store);
      if (!tenant) return undefined;
      return { ...tenant, store: record.store, scopes: [...record.scopes] };
    },
    async tenant(store, topts) {
      if (typeof store !== 'string' || !STORE_ID_PATTERN.test(store)) return undefined;
      const t = await tenants(store, topts?.fresh === true);
      return t && { ...t };
    },
  };
}
