/**
 * Redis key names. Every key of one store shares the hash tag `{store}`, so each Lua script touches a single
 * slot and the layout can move to Redis Cluster. Scripts build no key names: BucketStore names every key a script
 * touches with the functions below and passes it in KEYS.
 *
 *   <p>:{S}:epoch            seq of the open bucket (ms timestamp at which it opened; monotonic)
 *   <p>:{S}:b:<seq>:<pk>     bucket hash of one row: `<dayKey>|<metric>` -> integer
 *   <p>:{S}:r:<seq>          set of row pks the bucket touched
 *   <p>:{S}:sealed           list of sealed, not yet folded bucket seqs, oldest first
 *   <p>:{S}:folded           foldedThrough: the last bucket seq folded completely
 *   <p>:{S}:o:<pk>           row outbox: `<seq>|<dayKey>|<metric>` -> integer
 *   <p>:{S}:dirty            zset pk -> when the row's oldest unwritten count was folded (ms)
 *   <p>:{S}:due              zset pk -> when the row should be flushed (ms), by its flush policy; for an idle row an
 *                            alarm at or before that time (see dueLater)
 *   <p>:{S}:dl               hash pk -> an idle row's flush time (ms) when a fold moved it past its alarm in `due`:
 *                            the alarm is re-armed to it when it fires, not on every fold
 *   <p>:{S}:d:<batchId>      dedupe record of an applied batch (expires after the dedupe window)
 *   <p>:{S}:c:<pk>           cached DynamoDB items of a row (visitor history), with their watermarks
 *   <p>:{S}:v:<pk>           cache version of a visitor row, bumped by the writer's step that deletes outbox entries
 *   <p>:{S}:k:<day>:<metric>:<entity>  daily ranking zset of a ranked entity (member = key value), added to by each apply
 *   <p>:{S}:n                hash of the store's running counts: `entries` = outbox entries (kept by fold and ack)
 *   <p>:{S}:us:<pk>|<day>|<m>  distinct-count sketch of a row's day: exact set of members while it has at most 300
 *   <p>:{S}:uh:<pk>|<day>|<m>  the same sketch as a Redis HyperLogLog
 *   <p>:{S}:ur:<pk>          set of the row's `<day>|<m>` sketches not yet written to DynamoDB
 *   <p>:{S}:ux:<id>:…        scratch HLLs of one sketch union (deleted by it; expire after 60 s)
 *   <p>:{S}:x                store tombstone: the store was deleted; every writing script is a no-op while it exists
 *   <p>:{S}:xr               erased rows: zset pk -> until (ms) (a hash in earlier versions, read alike); the apply
 *                            and the sketch add drop those rows' counts and members until then; each erasure prunes
 *                            the entries whose time has passed
 *   <p>:{S}:xd               erased rows' days: hash pk -> the days (`YYYY-DDD`, comma-separated) of the outbox counts
 *                            its erasures deleted, kept and pruned with the pk's entry in `xr` (same TTL): a re-run of
 *                            an erasure cut short puts tombstone items on them (a stale flush writes there)
 *   <p>:{S}:unknown          set by the aggregator when it refused a batch because the store has no tenant (the
 *                            time, ms; expires): @tally/client refuses the store at once while it lasts
 *   <p>:{S}:tz               the store's IANA time zone, set by the aggregator from the tenant (expires; set again
 *                            on a change): @tally/client rolls the store's batches up in it, as the collector does
 *   <p>:{S}:f                the fence of the dynamo-writer and the bucket-aggregator, written right before their
 *                            WAIT for Redis replicas (REDIS_WAIT_REPLICAS; expires a minute after the store's last
 *                            flush or batch); the collector's and @tally/client's too, for an idempotency record
 *
 * Keys of a store's limits and its callers' idempotency keys, in the store's slot but outside its `<p>:{S}:` prefix (no
 * script of BucketStore's touches them, and deleting the store or erasing a visitor leaves them to expire):
 *   <p>:ingest-budget:{S}    the store's ingest budget: a token bucket hash shared by every collector (ingest-budget.ts)
 *   <p>:query-rate:{S}       the store's query rate limit: the count of the current window, shared by every query-API
 *                            replica (libs/http rate-limit.ts)
 *   <p>:idem:{S}:<batchId>   an Idempotency-Key's record: its batch's fingerprint (libs/intake; expires two dedupe
 *                            windows and the slack after it was bound)
 *
 * The sealer's work set, one per shard W (storeShard of the store; QUEUE_SHARDS shards), all in W's own slot:
 *   <p>:{<p>:wW}:active      zset store -> mark (a new one after every apply): stores with anything not yet written
 *   <p>:{<p>:wW}:marks       the shard's mark counter (INCR by each registration, never deleted: a mark never repeats)
 *   <p>:{<p>:wW}:stats       hash `<store>|r` -> dirty rows, `<store>|e` -> outbox entries, as last published
 *   <p>:{<p>:wW}:totals      hash rows, entries: the sums of stats
 *   <p>:{<p>:wW}:od          zset store -> time of its oldest count folded but not written
 *   <p>:{<p>:wW}:ou          zset store -> seq of its oldest bucket not folded
 *   <p>:{<p>:wW}:f           the shard's fence, written by the bucket-aggregator right before its WAIT for Redis
 *                            replicas covering a store's registration (REDIS_WAIT_REPLICAS; expires as a store's)
 */
import calculateSlot from 'cluster-key-slot';

/** The Redis Cluster hash slot (0-16383) of a key, by its hash tag: ioredis' own function. */
export const keySlot = (key: string): number => calculateSlot(key);

export const REDIS_SUFFIX = {
  epoch: 'epoch',
  bucket: 'b:',
  rows: 'r:',
  sealed: 'sealed',
  folded: 'folded',
  outbox: 'o:',
  dirty: 'dirty',
  due: 'due',
  dueLater: 'dl',
  batch: 'd:',
  cache: 'c:',
  cacheVersion: 'v:',
  rank: 'k:',
  counts: 'n',
  sketchSet: 'us:',
  sketchHll: 'uh:',
  sketchRows: 'ur:',
  sketchScratch: 'ux:',
  tombstone: 'x',
  erased: 'xr',
  erasedDays: 'xd',
  unknown: 'unknown',
  zone: 'tz',
  fence: 'f',
} as const;

/** Suffixes of a work-set shard's keys (`<p>:{<p>:wW}:` + suffix). */
export const WORK_SUFFIX = {
  active: 'active',
  stats: 'stats',
  totals: 'totals',
  oldestDirty: 'od',
  oldestUnfolded: 'ou',
  /** zset: active store -> the time (ms) the sealer next needs to visit it. */
  next: 'next',
  /** string: the shard's mark counter (REGISTER gives each registration the next value: a mark never repeats). */
  marks: 'marks',
} as const;

/**
 * The shard (0..shards-1) of a store: its queue shard and its sealer work set. A stable hash of the id, the same
 * in every process: changing the shard count moves stores, so every app of an installation uses one value.
 */
export function storeShard(store: string, shards: number): number {
  return shards <= 1 ? 0 : storeHash(store) % shards;
}

/** FNV-1a (32 bits) over the UTF-16 code units of a store id: cheap, stable, well spread for short ids. */
export function storeHash(store: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < store.length; i++) h = Math.imul(h ^ store.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export type RedisKeys = ReturnType<typeof redisKeys>;

export function redisKeys(prefix = 't') {
  /** `<p>:{S}:` — the prefix of every key of the store. */
  const tag = (s: string) => `${prefix}:{${s}}:`;
  const S = REDIS_SUFFIX;
  return {
    tag,
    epoch: (s: string) => tag(s) + S.epoch,
    bucket: (s: string, seq: number | string, pk: string) => `${tag(s)}${S.bucket}${seq}:${pk}`,
    bucketRows: (s: string, seq: number | string) => `${tag(s)}${S.rows}${seq}`,
    sealed: (s: string) => tag(s) + S.sealed,
    folded: (s: string) => tag(s) + S.folded,
    outbox: (s: string, pk: string) => tag(s) + S.outbox + pk,
    dirty: (s: string) => tag(s) + S.dirty,
    due: (s: string) => tag(s) + S.due,
    dueLater: (s: string) => tag(s) + S.dueLater,
    batch: (s: string, id: string) => tag(s) + S.batch + id,
    cache: (s: string, pk: string) => tag(s) + S.cache + pk,
    cacheVersion: (s: string, pk: string) => tag(s) + S.cacheVersion + pk,
    rank: (s: string, day: string, metric: string, entity: string) => `${tag(s)}${S.rank}${day}:${metric}:${entity}`,
    counts: (s: string) => tag(s) + S.counts,
    /** The store's tombstone (set when the store is deleted, kept for the dedupe window). */
    tombstone: (s: string) => tag(s) + S.tombstone,
    /** The store's erased rows (visitor erasure): a zset pk -> until (ms), pruned by each erasure. */
    erased: (s: string) => tag(s) + S.erased,
    /** The days of the outbox counts each erased row's erasures deleted: a hash pk -> days, pruned with `erased`. */
    erasedDays: (s: string) => tag(s) + S.erasedDays,
    /** The mark of a store refused as unknown (no tenant), read by @tally/client. */
    unknownStore: (s: string) => tag(s) + S.unknown,
    /** The store's time zone as the aggregator last found its tenant's, read by @tally/client to roll batches up. */
    storeZone: (s: string) => tag(s) + S.zone,
    /** The fingerprint of the aggregators' rules (CompiledRules.fingerprint), read by @tally/client before it rolls up. */
    rules: `${prefix}:rules`,
    /** The aggregators' DEDUPE_WINDOW_SECONDS, read by the dlq tool: its replay guard is that window. */
    dedupeWindow: `${prefix}:dedupe-window`,
    /**
     * How long the aggregators kept the daily rankings: a hash days -> since (ms), every aggregator keeping them at
     * least that many days since then (TOP_HISTORY_DAYS; @tally/buckets top-history.ts), read by the query API's top lists.
     */
    topHistory: `${prefix}:top-history`,
    /** The store's ingest budget, a token bucket shared by every collector. */
    ingestBudget: (s: string) => `${prefix}:ingest-budget:{${s}}`,
    /** The record of the store's Idempotency-Key that gives batch `batchId` (libs/intake): its fingerprint. */
    idempotency: (s: string, batchId: string) => `${prefix}:idem:{${s}}:${batchId}`,
    /** What the query rate limit's counts are named by: `<p>:query-rate:` + `{S}` (the store's hash tag). */
    queryRatePrefix: `${prefix}:query-rate:`,
    /** The fence of the writer and the aggregator: written before their WAIT for Redis replicas, so the WAIT covers the store's writes. */
    fence: (s: string) => tag(s) + S.fence,
    /** `<p>:{<p>:wW}:` — the prefix of work-set shard W's keys. */
    work: (shard: number) => `${prefix}:{${prefix}:w${shard}}:`,
  };
}

/** Field of an outbox hash: `<seq>|2023-123|ViewCount` (a bucket hash's field is `2023-123|ViewCount`). */
export function parseOutboxField(field: string): { seq: number; dayKey: string; metric: string } {
  const a = field.indexOf('|');
  const b = field.indexOf('|', a + 1);
  return { seq: Number(field.slice(0, a)), dayKey: field.slice(a + 1, b), metric: field.slice(b + 1) };
}
