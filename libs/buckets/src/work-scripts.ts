import { REDIS_SUFFIX as S } from '@tally/key-layout';

/**
 * Scripts of the sealer's work set. VISIT runs on one store's keys (its hash tag); PUBLISH_BACKLOG on one
 * work-set shard's keys (declared in KEYS), never on a store's (another slot under Redis Cluster).
 */

/**
 * VISIT a store for a sealer tick, in one round trip: seal the open bucket when it has data and has been open at
 * least minAgeMs (as SEAL), then report what is left. KEYS: [tag]. ARGV: now, minAgeMs.
 * Returns {sealedSeq or '', oldest sealed seq or '', dirty rows, oldest dirty time or '', outbox entries,
 * rows due at now, oldest unfolded seq or ''}.
 */
export const VISIT = `#!lua
local tag = KEYS[1]
local now = tonumber(ARGV[1])
local epoch = redis.call('GET', tag .. '${S.epoch}')
local openHasData = epoch and redis.call('EXISTS', tag .. '${S.rows}' .. epoch) == 1
local sealed = ''
redis.call('LLEN', tag .. '${S.sealed}') -- fails on a wrong type before anything is written
if openHasData and now - tonumber(epoch) >= tonumber(ARGV[2]) then
  redis.call('SET', tag .. '${S.epoch}', string.format('%d', math.max(tonumber(epoch) + 1, now)))
  redis.call('RPUSH', tag .. '${S.sealed}', epoch)
  sealed = epoch
  openHasData = false
end
local head = redis.call('LINDEX', tag .. '${S.sealed}', 0) or ''
local first = redis.call('ZRANGE', tag .. '${S.dirty}', 0, 0, 'WITHSCORES')
local unfolded = head
if unfolded == '' and openHasData then unfolded = epoch end
return {
  sealed,
  head,
  redis.call('ZCARD', tag .. '${S.dirty}'),
  first[2] or '',
  redis.call('HGET', tag .. '${S.counts}', 'entries') or '0',
  redis.call('ZCOUNT', tag .. '${S.due}', '-inf', ARGV[1]),
  unfolded,
}
`;

/**
 * PUBLISH stores' backlogs into their work-set shard and keep the shard's totals equal to the sum of its stores'.
 * KEYS: [active, stats, totals, oldestDirty, oldestUnfolded]. ARGV, per store: store, rows, entries, oldestDirty
 * ('' = none), oldestUnfolded ('' = none), mark ('' = never retire).
 * Only a store in the active set is published (a late publish cannot resurrect a retired store). When `mark` is
 * given, the store has nothing left (no dirty row, nothing unfolded) and its mark is still `mark` (no apply since
 * the caller read it), the store is retired: removed from the set with its stats. Returns per store 0 not
 * active, 1 published, 2 retired.
 */
export const PUBLISH_BACKLOG = `#!lua
local out = {}
for i = 1, #ARGV, 6 do
  local store = ARGV[i]
  local mark = redis.call('ZSCORE', KEYS[1], store)
  if not mark then
    table.insert(out, 0)
  else
    local rows = tonumber(ARGV[i + 1])
    local entries = tonumber(ARGV[i + 2])
    local old = redis.call('HMGET', KEYS[2], store .. '|r', store .. '|e')
    local retire = ARGV[i + 5] ~= '' and rows == 0 and ARGV[i + 4] == '' and tonumber(mark) == tonumber(ARGV[i + 5])
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
      table.insert(out, 2)
    else
      redis.call('HSET', KEYS[2], store .. '|r', rows, store .. '|e', entries)
      if ARGV[i + 3] == '' then redis.call('ZREM', KEYS[4], store) else redis.call('ZADD', KEYS[4], ARGV[i + 3], store) end
      if ARGV[i + 4] == '' then redis.call('ZREM', KEYS[5], store) else redis.call('ZADD', KEYS[5], ARGV[i + 4], store) end
      table.insert(out, 1)
    end
  end
end
return out
`;
