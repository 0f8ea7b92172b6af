/**
 * Redis key names. Every key of one store shares the hash tag `{store}`, so each Lua script touches a single
 * slot and the layout can move to Redis Cluster. Scripts receive the store's tag prefix as KEYS[1] and append
 * the suffixes below; keep the two in step through REDIS_SUFFIX.
 *
 *   <p>:{S}:epoch            seq of the open bucket (ms timestamp at which it opened; monotonic)
 *   <p>:{S}:b:<seq>:<pk>     bucket hash of one row: `<dayKey>|<metric>` -> integer
 *   <p>:{S}:r:<seq>          set of row pks the bucket touched
 *   <p>:{S}:sealed           list of sealed, not yet folded bucket seqs, oldest first
 *   <p>:{S}:folded           foldedThrough: the last bucket seq folded completely
 *   <p>:{S}:o:<pk>           row outbox: `<seq>|<dayKey>|<metric>` -> integer
 *   <p>:{S}:dirty            zset pk -> when the row's oldest unwritten count was folded (ms)
 *   <p>:{S}:due              zset pk -> when the row should be flushed (ms), by its flush policy
 *   <p>:{S}:d:<batchId>      dedupe record of an applied batch (expires after the dedupe window)
 *   <p>:{S}:c:<pk>           cached DynamoDB items of a row (visitor history), with their watermarks
 *   <p>:{S}:v:<pk>           cache version, bumped by the writer in the step that deletes outbox entries
 *   <p>:{S}:lock             sealer lock
 *   <p>:{S}:k:<day>:<metric>:<entity>  daily ranking zset of a ranked entity (member = key value), from folds
 *   <p>:stores               set of stores that ever had data (not touched by scripts)
 */
export const REDIS_SUFFIX = {
  epoch: 'epoch',
  bucket: 'b:',
  rows: 'r:',
  sealed: 'sealed',
  folded: 'folded',
  outbox: 'o:',
  dirty: 'dirty',
  due: 'due',
  batch: 'd:',
  cache: 'c:',
  cacheVersion: 'v:',
  lock: 'lock',
  rank: 'k:',
} as const;

export interface RedisKeys {
  /** `<p>:{S}:` — KEYS[1] of every store script. */
  tag(store: string): string;
  stores: string;
  epoch(store: string): string;
  bucket(store: string, seq: number | string, pk: string): string;
  bucketRows(store: string, seq: number | string): string;
  sealed(store: string): string;
  folded(store: string): string;
  outbox(store: string, pk: string): string;
  dirty(store: string): string;
  due(store: string): string;
  batch(store: string, batchId: string): string;
  cache(store: string, pk: string): string;
  cacheVersion(store: string, pk: string): string;
  lock(store: string): string;
  rank(store: string, dayKey: string, metric: string, entity: string): string;
}

export function redisKeys(prefix = 't'): RedisKeys {
  const tag = (s: string) => `${prefix}:{${s}}:`;
  const S = REDIS_SUFFIX;
  return {
    tag,
    stores: `${prefix}:stores`,
    epoch: (s) => tag(s) + S.epoch,
    bucket: (s, seq, pk) => `${tag(s)}${S.bucket}${seq}:${pk}`,
    bucketRows: (s, seq) => `${tag(s)}${S.rows}${seq}`,
    sealed: (s) => tag(s) + S.sealed,
    folded: (s) => tag(s) + S.folded,
    outbox: (s, pk) => tag(s) + S.outbox + pk,
    dirty: (s) => tag(s) + S.dirty,
    due: (s) => tag(s) + S.due,
    batch: (s, id) => tag(s) + S.batch + id,
    cache: (s, pk) => tag(s) + S.cache + pk,
    cacheVersion: (s, pk) => tag(s) + S.cacheVersion + pk,
    lock: (s) => tag(s) + S.lock,
    rank: (s, day, metric, entity) => `${tag(s)}${S.rank}${day}:${metric}:${entity}`,
  };
}

/** Field of a bucket hash: `2023-123|ViewCount`. Neither part can contain `|`. */
export const bucketField = (dayKey: string, metric: string) => `${dayKey}|${metric}`;

/** Field of an outbox hash: `<seq>|2023-123|ViewCount`. */
export const outboxField = (seq: number | string, dayKey: string, metric: string) => `${seq}|${dayKey}|${metric}`;

export function parseOutboxField(field: string): { seq: number; dayKey: string; metric: string } {
  const a = field.indexOf('|');
  const b = field.indexOf('|', a + 1);
  return { seq: Number(field.slice(0, a)), dayKey: field.slice(a + 1, b), metric: field.slice(b + 1) };
}

export function parseBucketField(field: string): { dayKey: string; metric: string } {
  const a = field.indexOf('|');
  return { dayKey: field.slice(0, a), metric: field.slice(a + 1) };
}
