import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { STORE_ID_PATTERN } from '@tally/key-layout';
import { getTenant, type TenantInfo } from './admin';
import { TenantsUnavailableError } from './errors';
import { bool, keyItemKey, scopesOf, str } from './items';
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
  /** Cached keys and tenants, each, that exist; the least recently used are dropped beyond it. Default 100,000. */
  maxEntries?: number;
  /**
   * Cached keys and store ids, each, that DynamoDB said do not exist, in a cache of their own (so that made-up keys
   * cannot push real ones out); the least recently used are dropped beyond it. Default 10,000.
   */
  maxUnknownEntries?: number;
  /**
   * How long after DynamoDB last confirmed it a key's lookup may still be served while DynamoDB fails (a revoked
   * key confirmed as valid before is accepted for at most this long after that, never longer); a key entry older than
   * this is dropped. Default STALE_KEY_MAX_MS (1 h). Tenants have no such bound: what a tenant holds is no credential
   * (a deleted store's batches are dropped by its tombstone), and the aggregator bins by the last-known time zone.
   */
  staleKeyMaxMs?: number;
  /** The clock that ages cache entries and times retries (ms since the epoch). Default `Date.now`. */
  now?: () => number;
  /**
   * DynamoDB lookups per second, in this process, of keys not cached as existing (new, made-up, or found not to exist
   * longer than `cacheTtlMs` ago), from a bucket holding UNKNOWN_KEY_LOOKUP_BURST_SECONDS of them: past it such a key
   * is refused without a lookup (UnknownKeyLookupsThrottledError, a TenantsUnavailableError: callers answer 503 with
   * Retry-After, and a real new key works once the bucket has a lookup again). Keys cached as existing are never
   * refused. Default unbounded.
   */
  unknownKeyLookupsPerSecond?: number;
  /** Called for each key refused by unknownKeyLookupsPerSecond (a metric). */
  onUnknownKeyLookupRefused?: () => void;
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

/** The default of TenantDirectoryOptions.staleKeyMaxMs: 1 hour. */
const STALE_KEY_MAX_MS = 3_600_000;

/**
 * Seconds of unknownKeyLookupsPerSecond the bucket holds: a replica that starts with an empty cache looks up the keys
 * in use at once, up to this many seconds' worth.
 */
const UNKNOWN_KEY_LOOKUP_BURST_SECONDS = 10;

/**
 * A key was not looked up: this process's budget of lookups of keys not cached as existing
 * (TenantDirectoryOptions.unknownKeyLookupsPerSecond) is spent for now. Retry in a moment.
 */
export class UnknownKeyLookupsThrottledError extends TenantsUnavailableError {}

/**
 * Key and tenant lookups for any app, cached for `cacheTtlMs`: while DynamoDB answers, a value older than the TTL
 * is looked up again before it is used, so a revoked key fails within the TTL. When DynamoDB fails, the last value
 * known for that key (confirmed less than `staleKeyMaxMs` ago) or store is served at once (an outage of DynamoDB
 * shorter than that never stops or slows intake) and refreshed in the background; when nothing is known,
 * TenantsUnavailableError is thrown. Concurrent lookups of one id share one request. A key not in the format Tally
 * issues is refused without a lookup; ids found not to exist are cached apart from those that do, each cache a
 * least-recently-used one.
 */
export function createTenantDirectory(opts: TenantDirectoryOptions): TenantDirectory {
  const retryAfterFailureMs = opts.retryAfterFailureMs ?? 1_000;
  const maxEntries = opts.maxEntries ?? 100_000;
  const maxUnknownEntries = opts.maxUnknownEntries ?? 10_000;
  const staleKeyMaxMs = opts.staleKeyMaxMs ?? STALE_KEY_MAX_MS;
  const now = opts.now ?? (() => Date.now());
  /** degraded: the last lookup failed; until: no new lookup for unknown ids before this (ms). */
  const outage = { until: 0, degraded: false };
  const unknownKeyBudget = tokenBucket(opts.unknownKeyLookupsPerSecond, now);

  const keys = cache<KeyRecord | undefined>(
    'key',
    async (hash) => {
      const out = await opts.dynamo.send(new GetItemCommand({ TableName: opts.table, Key: keyItemKey(hash), ConsistentRead: true }));
      const item = out.Item;
      const store = item && str(item, 'store');
      if (!item || !store) return undefined;
      return { store, scopes: scopesOf(item), revoked: bool(item, 'revoked') };
    },
    staleKeyMaxMs,
  );

  const tenants = cache<DirectoryTenant | undefined>(
    'tenant',
    async (store) => {
      const t = await getTenant({ dynamo: opts.dynamo, table: opts.table }, store);
      if (!t || t.deletingAt) return undefined; // a store being deleted is unknown
      const { createdAt: _createdAt, ...tenant } = t;
      return tenant;
    },
    Infinity,
  );

  /** A cache of lookups of one kind: `staleMaxMs` is how long after its lookup an entry may be served at all. */
  function cache<V>(kind: 'key' | 'tenant', fetch: (id: string) => Promise<V>, staleMaxMs: number) {
    type Entry = { value: V; at: number };
    // Maps keep insertion order: an entry is moved to the end when used, so the first is the least recently used.
    const found = new Map<string, Entry>();
    const unknown = new Map<string, Entry>();
    const inflight = new Map<string, Promise<V>>();

    /** The cached entry of `id` if it is within staleMaxMs of its lookup (an older one is dropped), marked as used. */
    const cached = (id: string): Entry | undefined => {
      const map = found.has(id) ? found : unknown;
      const entry = map.get(id);
      if (!entry) return undefined;
      map.delete(id);
      if (now() - entry.at >= staleMaxMs) return undefined;
      map.set(id, entry);
      return entry;
    };

    const remember = (id: string, value: V) => {
      found.delete(id);
      unknown.delete(id);
      const [map, max] = value === undefined ? [unknown, maxUnknownEntries] : [found, maxEntries];
      map.set(id, { value, at: now() });
      if (map.size > max) map.delete(map.keys().next().value as string);
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
      const known = fresh ? undefined : cached(id);
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
      // A key not cached as existing (whose lookup is not already under way) is looked up only within the budget.
      if (kind === 'key' && !found.has(id) && !inflight.has(id) && !unknownKeyBudget()) {
        opts.onUnknownKeyLookupRefused?.();
        throw new UnknownKeyLookupsThrottledError(
          'too many API keys that are not cached are being looked up right now (unknownKeyLookupsPerSecond); not looked up',
        );
      }
      try {
        return await lookup(id);
      } catch (err) {
        const last = fresh ? undefined : cached(id);
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

/**
 * A token bucket of `perSecond` (undefined or 0: unbounded) holding UNKNOWN_KEY_LOOKUP_BURST_SECONDS of it, full at
 * first; each call takes one token and says whether there was one.
 */
function tokenBucket(perSecond: number | undefined, now: () => number): () => boolean {
  if (!perSecond || perSecond <= 0) return () => true;
  const capacity = Math.max(1, perSecond * UNKNOWN_KEY_LOOKUP_BURST_SECONDS);
  let tokens = capacity;
  let at = now();
  return () => {
    const t = now();
    if (t > at) {
      tokens = Math.min(capacity, tokens + ((t - at) * perSecond) / 1_000);
      at = t;
    }
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
}
