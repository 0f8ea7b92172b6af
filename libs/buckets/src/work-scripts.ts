/**
 * Scripts of the sealer's work set: each runs on one work-set shard's keys (one hash tag, declared in KEYS), never
 * on a store's keys (another slot under Redis Cluster). KEYS: [active, stats, totals, oldestDirty, oldestUnfolded].
 */

/**
 * PUBLISH a store's backlog into its work-set shard and keep the shard's totals equal to the sum of its stores'.
 * ARGV: store, rows, entries, oldestDirty ('' = none), oldestUnfolded ('' = none), mark ('' = never retire).
 * Only a store in the active set is published (a late publish cannot resurrect a retired store). When `mark` is
 * given, the store has nothing left (no dirty row, nothing unfolded) and its mark is still `mark` (no apply since
 * the caller read it), the store is retired: removed from the set with its stats. Returns 0 not active,
 * 1 published, 2 retired.
 */
export const PUBLISH_BACKLOG = `#!lua
local store = ARGV[1]
local mark = redis.call('ZSCORE', KEYS[1], store)
if not mark then return 0 end
local rows = tonumber(ARGV[2])
local entries = tonumber(ARGV[3])
local old = redis.call('HMGET', KEYS[2], store .. '|r', store .. '|e')
local retire = ARGV[6] ~= '' and rows == 0 and ARGV[5] == '' and tonumber(mark) == tonumber(ARGV[6])
if retire then
  rows = 0
  entries = 0
end
redis.call('HINCRBY', KEYS[3], 'rows', rows - (tonumber(old[1]) or 0))
redis.call('HINCRBY', KEYS[3], 'entries', entries - (tonumber(old[2]) or 0))
if retire then
  redis.call('ZREM', KEYS[1], store)
  redis.call('HDEL', KEYS[2], store .. '|r', store .. '|e')
  redis.call('ZREM', KEYS[4], store)
  redis.call('ZREM', KEYS[5], store)
  return 2
end
redis.call('HSET', KEYS[2], store .. '|r', rows, store .. '|e', entries)
if ARGV[4] == '' then redis.call('ZREM', KEYS[4], store) else redis.call('ZADD', KEYS[4], ARGV[4], store) end
if ARGV[5] == '' then redis.call('ZREM', KEYS[5], store) else redis.call('ZADD', KEYS[5], ARGV[5], store) end
return 1
`;
