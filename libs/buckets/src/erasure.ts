import { REDIS_SUFFIX as S, WORK_SUFFIX } from '@tally/key-layout';
import type { Cluster, Redis } from 'ioredis';
import type { BucketStore } from './bucket-store';

/**
 * ERASE one row (a visitor) from Redis and keep it erased: its outbox, its counts in the open and sealed buckets
 * (and its place in their row sets), its dirty and due marks, its cached history (the cache version is bumped, so
 * a query that read DynamoDB before cannot store what it read), and an entry in the erased-rows hash until
 * `until` (ms), which makes APPLY drop the row's counts (TOMBSTONES in scripts.ts). Idempotent.
 * KEYS: [tag]. ARGV: pk, until, ttlSeconds (of the erased-rows hash: at least this from now).
 * Returns {outbox fields, bucket fields, cached (0|1)} removed. Every read and check before the first write.
 */
export const ERASE_ROW = `#!lua
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
local tag = KEYS[1]
local pk = ARGV[1]
if not (string.match(ARGV[2], '^%d+$') and string.match(ARGV[3], '^[1-9]%d*$')) then
  return redis.error_reply('TALLY_ERR_ARGUMENT until and ttl must be positive integers')
end
-- Read phase.
local erasedKey = tag .. '${S.erased}'
local outbox = tag .. '${S.outbox}' .. pk
local cacheKey = tag .. '${S.cache}' .. pk
local versionKey = tag .. '${S.cacheVersion}' .. pk
local countsKey = tag .. '${S.counts}'
expectType(erasedKey, 'hash')
expectType(tag .. '${S.dirty}', 'zset')
expectType(tag .. '${S.due}', 'zset')
expectType(countsKey, 'hash')
local outboxFields = redis.call('HLEN', outbox)
local entries = redis.call('HGET', countsKey, 'entries')
if entries and not (string.match(entries, '^-?%d+$') and #entries < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. countsKey .. ' entries is not an integer')
end
local version = redis.call('GET', versionKey)
if version and not (string.match(version, '^%d+$') and #version < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. versionKey .. ' is not a cache version')
end
local seqs = redis.call('LRANGE', tag .. '${S.sealed}', 0, -1)
local epoch = redis.call('GET', tag .. '${S.epoch}')
if epoch then table.insert(seqs, epoch) end
local buckets = {}
local bucketFields = 0
for _, seq in ipairs(seqs) do
  local key = tag .. '${S.bucket}' .. seq .. ':' .. pk
  local n = redis.call('HLEN', key)
  expectType(tag .. '${S.rows}' .. seq, 'set')
  bucketFields = bucketFields + n
  table.insert(buckets, {key, tag .. '${S.rows}' .. seq})
end
local cached = redis.call('EXISTS', cacheKey)
local ttl = redis.call('TTL', erasedKey)
-- Write phase: commands that cannot fail on the keys checked above.
redis.call('HSET', erasedKey, pk, ARGV[2])
if ttl < tonumber(ARGV[3]) then redis.call('EXPIRE', erasedKey, ARGV[3]) end
redis.call('DEL', outbox, cacheKey)
for _, b in ipairs(buckets) do
  redis.call('DEL', b[1])
  redis.call('SREM', b[2], pk)
end
redis.call('ZREM', tag .. '${S.dirty}', pk)
redis.call('ZREM', tag .. '${S.due}', pk)
redis.call('INCR', versionKey)
redis.call('EXPIRE', versionKey, 172800)
if redis.call('ZCARD', tag .. '${S.dirty}') == 0 then
  redis.call('HDEL', countsKey, 'entries')
elseif entries then
  redis.call('HSET', countsKey, 'entries', string.format('%d', math.max(0, tonumber(entries) - outboxFields)))
end
return {outboxFields, bucketFields, cached}
`;

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
    if (!('tallyERASE_ROW' in this.redis)) this.redis.defineCommand('tallyERASE_ROW', { lua: ERASE_ROW, numberOfKeys: 1 });
  }

  /** Sets (or renews) the store's tombstone: from now on every writing script of the store is a no-op. */
  async markStoreDeleted(store: string, ttlSeconds: number): Promise<void> {
    await this.redis.set(this.buckets.keys.tombstone(store), String(Date.now()), 'EX', ttlSeconds);
  }

  async storeDeleted(store: string): Promise<boolean> {
    return (await this.redis.exists(this.buckets.keys.tombstone(store))) === 1;
  }

  /**
   * Deletes every key of the store but its tombstone (buckets, outboxes, dedupe records, caches, rankings, counts)
   * and takes the store out of its work-set shard. Returns the number of keys deleted. Idempotent.
   */
  async deleteStoreKeys(store: string): Promise<number> {
    const tag = this.buckets.keys.tag(store);
    const keep = this.buckets.keys.tombstone(store);
    const nodes: Redis[] = 'nodes' in this.redis && typeof this.redis.nodes === 'function' ? (this.redis as Cluster).nodes('master') : [this.redis as Redis];
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
    const [outbox, bucket, cached] = (await (this.redis as any).tallyERASE_ROW(this.buckets.keys.tag(store), pk, Math.ceil(opts.until), opts.ttlSeconds)) as [number, number, number];
    return { outboxEntries: Number(outbox), bucketEntries: Number(bucket), cachedHistory: Number(cached) === 1 };
  }
}
