import { WORK_SUFFIX } from '@tally/key-layout';
import type { Cluster, Redis } from 'ioredis';
import type { BucketStore } from './bucket-store';
import { defineScript, runScript } from './script-table';

/**
 * ERASE one row (a visitor) from Redis and keep it erased: its outbox, its counts in the open and sealed buckets
 * (and its place in their row sets), its dirty and due marks, its cached history (the cache version is bumped, so
 * a query that read DynamoDB before cannot store what it read), and an entry in the erased-rows hash until
 * `untilMs`, which makes APPLY drop the row's counts (TOMBSTONES in scripts.ts). Idempotent.
 * KEYS: erased, outbox, cache, cacheVersion, counts, dirty, due, sealed, epoch, dueLater, then per bucket seq (the sealed
 * ones, then the open one) its hash of the row and its row set. ARGV: pk, untilMs, ttlSeconds (of the erased-rows
 * hash: at least this from now), cacheVersionTtlSeconds, sealedCount, then the seqs. Returns {1, outbox fields,
 * bucket fields, cached (0|1)}, or {0, epoch or '', sealed seqs...} (nothing written) when the seqs are not the
 * store's. Every read and check before the first write.
 */
export const ERASE_ROW = defineScript<[1, number, number, number] | [0, string, ...string[]]>()({
  name: 'ERASE_ROW',
  shebang: '#!lua',
  keys: ['erased', 'outbox', 'cache', 'cacheVersion', 'counts', 'dirty', 'due', 'sealed', 'epoch', 'dueLater'],
  args: ['pk', 'untilMs', 'ttlSeconds', 'cacheVersionTtlSeconds', 'sealedCount'],
  body: `
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
if not (string.match(A.untilMs, '^%d+$') and string.match(A.ttlSeconds, '^[1-9]%d*$')) then
  return redis.error_reply('TALLY_ERR_ARGUMENT until and ttl must be positive integers')
end
-- The bucket layout the caller declared keys for: the sealed seqs, then the open one ('' = none).
local sealed = redis.call('LRANGE', K.sealed, 0, -1)
local epoch = redis.call('GET', K.epoch) or ''
local n = tonumber(A.sealedCount)
local same = #sealed == n and epoch == (ARGV[AR + n] or '')
for j = 1, n do same = same and sealed[j] == ARGV[AR + j - 1] end
if not same then
  local stale = {0, epoch}
  for _, seq in ipairs(sealed) do table.insert(stale, seq) end
  return stale
end
-- Read phase.
expectType(K.erased, 'hash')
expectType(K.dirty, 'zset')
expectType(K.due, 'zset')
expectType(K.dueLater, 'hash')
expectType(K.counts, 'hash')
local outboxFields = redis.call('HLEN', K.outbox)
local entries = redis.call('HGET', K.counts, 'entries')
if entries and not (string.match(entries, '^-?%d+$') and #entries < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.counts .. ' entries is not an integer')
end
local version = redis.call('GET', K.cacheVersion)
if version and not (string.match(version, '^%d+$') and #version < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.cacheVersion .. ' is not a cache version')
end
local bucketFields = 0
for k = KR, #KEYS, 2 do
  bucketFields = bucketFields + redis.call('HLEN', KEYS[k])
  expectType(KEYS[k + 1], 'set')
end
local cached = redis.call('EXISTS', K.cache)
local ttl = redis.call('TTL', K.erased)
-- Write phase: commands that cannot fail on the keys checked above.
redis.call('HSET', K.erased, A.pk, A.untilMs)
if ttl < tonumber(A.ttlSeconds) then redis.call('EXPIRE', K.erased, A.ttlSeconds) end
redis.call('DEL', K.outbox, K.cache)
for k = KR, #KEYS, 2 do
  redis.call('DEL', KEYS[k])
  redis.call('SREM', KEYS[k + 1], A.pk)
end
redis.call('ZREM', K.dirty, A.pk)
redis.call('ZREM', K.due, A.pk)
redis.call('HDEL', K.dueLater, A.pk)
redis.call('INCR', K.cacheVersion)
redis.call('EXPIRE', K.cacheVersion, A.cacheVersionTtlSeconds)
if redis.call('ZCARD', K.dirty) == 0 then
  redis.call('HDEL', K.counts, 'entries')
elseif entries then
  redis.call('HSET', K.counts, 'entries', string.format('%d', math.max(0, tonumber(entries) - outboxFields)))
end
return {1, outboxFields, bucketFields, cached}
`,
});

/** How long a row's cache version outlives its last bump (as BucketStore's default). */
const CACHE_VERSION_TTL_SECONDS = 2 * 86_400;

/** What erasing one row removed from Redis. */
export interface RowErasure {
  /** Outbox fields (counts folded but not yet in DynamoDB). */
  outboxEntries: number;
  /** Fields of the open and sealed buckets (counts not yet folded). */
  bucketEntries: number;
  /** Whether a cached history was dropped. */
  cachedHistory: boolean;
}

/**
 * The Redis side of deleting a store and of erasing a visitor (docs/DESIGN.md "Privacy"): tombstones that the
 * scripts honour, and the deletion of a store's keys on one Redis or on every master of a Redis Cluster (all of
 * a store's keys share its hash tag, so one node holds them).
 */
export class BucketEraser {
  private readonly redis: Redis | Cluster;
  private readonly buckets: BucketStore;

  constructor(opts: { redis: Redis | Cluster; buckets: BucketStore }) {
    this.redis = opts.redis;
    this.buckets = opts.buckets;
  }

  /** Sets (or renews) the store's tombstone: from now on every writing script of the store is a no-op. */
  async markStoreDeleted(store: string, ttlSeconds: number): Promise<void> {
    await this.redis.set(this.buckets.keys.tombstone(store), String(Date.now()), 'EX', ttlSeconds);
  }

  /**
   * Deletes every key of the store but its tombstone (buckets, outboxes, dedupe records, caches, rankings, counts)
   * and takes the store out of its work-set shard. Returns the number of keys deleted. Idempotent.
   */
  async deleteStoreKeys(store: string): Promise<number> {
    const tag = this.buckets.keys.tag(store);
    const keep = this.buckets.keys.tombstone(store);
    const nodes: Redis[] =
      'nodes' in this.redis && typeof this.redis.nodes === 'function' ? (this.redis as Cluster).nodes('master') : [this.redis as Redis];
    let deleted = 0;
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${tag}*`, 'COUNT', 1000);
        cursor = next;
        const mine = keys.filter((k) => k !== keep);
        // One slot (the store's hash tag), so a multi-key UNLINK is valid on a cluster too.
        for (let i = 0; i < mine.length; i += 500) deleted += await this.redis.unlink(...mine.slice(i, i + 500));
      } while (cursor !== '0');
    }
    const active = this.buckets.keys.work(this.buckets.shardOf(store)) + WORK_SUFFIX.active;
    const mark = await this.redis.zscore(active, store);
    if (mark !== null) {
      // Nothing is left: publishing an empty backlog with the current mark retires the store (and keeps the totals right).
      await this.buckets.publishBacklog(store, { rows: 0, entries: 0, oldestDirty: undefined, oldestUnfolded: undefined }, mark);
    }
    return deleted;
  }

  /**
   * Erases one row (see ERASE_ROW) and keeps new counts of it out until `until` (ms). Call it again after the
   * row's DynamoDB items are deleted: a query that read them in between may have cached them.
   */
  async eraseRow(store: string, pk: string, opts: { until: number; ttlSeconds: number }): Promise<RowErasure> {
    const k = this.buckets.keys;
    const keys = {
      erased: k.erased(store),
      outbox: k.outbox(store, pk),
      cache: k.cache(store, pk),
      cacheVersion: k.cacheVersion(store, pk),
      counts: k.counts(store),
      dirty: k.dirty(store),
      due: k.due(store),
      sealed: k.sealed(store),
      epoch: k.epoch(store),
      dueLater: k.dueLater(store),
    };
    let layout = { epoch: (await this.redis.get(keys.epoch)) ?? '', sealed: await this.redis.lrange(keys.sealed, 0, -1) };
    for (let attempt = 0; attempt < 10; attempt++) {
      const seqs = layout.epoch === '' ? layout.sealed : [...layout.sealed, layout.epoch];
      const r = await runScript(
        this.redis,
        ERASE_ROW,
        keys,
        {
          pk,
          untilMs: Math.ceil(opts.until),
          ttlSeconds: opts.ttlSeconds,
          cacheVersionTtlSeconds: CACHE_VERSION_TTL_SECONDS,
          sealedCount: layout.sealed.length,
        },
        { keys: seqs.flatMap((seq) => [k.bucket(store, seq, pk), k.bucketRows(store, seq)]), args: [...layout.sealed, layout.epoch] },
      );
      if (r[0] === 1) return { outboxEntries: Number(r[1]), bucketEntries: Number(r[2]), cachedHistory: Number(r[3]) === 1 };
      const [, epoch, ...sealed] = r;
      layout = { epoch, sealed };
    }
    throw new Error(`store ${store}: the bucket layout moved 10 times during one erasure`);
  }
}
