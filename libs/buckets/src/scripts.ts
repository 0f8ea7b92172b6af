import { REDIS_SUFFIX as S } from '@tally/key-layout';

/**
 * Lua scripts: each runs atomically on one store's keys (one hash tag). KEYS[1] is the store's tag prefix
 * `<p>:{store}:`; the scripts append REDIS_SUFFIX names. Numbers that can exceed 2^31 are formatted with
 * %d, never tostring (which would print 1.7e+12).
 */

/**
 * Flush-policy arithmetic shared by fold and ack. Policy arguments: kind ('bucket'|'every'|'idle'), a, b
 * (every: a = interval ms; idle: a = idle ms, b = max age ms). Keeps an existing earlier `every` due time.
 */
const DUE = `
local function schedule(tag, pk, now, kind, a, b)
  local due
  if kind == 'bucket' then
    due = now
  elseif kind == 'every' then
    if redis.call('ZSCORE', tag .. '${S.due}', pk) then return end
    due = (math.floor(now / a) + 1) * a
  else
    local first = tonumber(redis.call('ZSCORE', tag .. '${S.dirty}', pk)) or now
    due = math.min(now + a, first + b)
  end
  redis.call('ZADD', tag .. '${S.due}', string.format('%d', due), pk)
end
`;

/**
 * APPLY one events batch into the open bucket, at most once per batch id.
 * KEYS: [tag, dedupeKey]. ARGV: now, dedupeTtlSeconds, rowCount, then per row: pk, fieldCount, (field, delta)*.
 * Returns {1, seq} when applied, {0, 0} when the batch id was already applied (a redelivery).
 * The epoch is read inside the script, so once the sealer advanced it the sealed bucket can never change.
 */
export const APPLY = `
local tag = KEYS[1]
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return {0, 0} end
local epoch = redis.call('GET', tag .. '${S.epoch}')
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', tag .. '${S.epoch}', epoch)
end
local rowsKey = tag .. '${S.rows}' .. epoch
local bucketPrefix = tag .. '${S.bucket}' .. epoch .. ':'
local i = 4
local pks = {}
local np = 0
for r = 1, tonumber(ARGV[3]) do
  local pk = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local key = bucketPrefix .. pk
  for f = 1, n do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  np = np + 1
  pks[np] = pk
  if np == 2000 then
    redis.call('SADD', rowsKey, unpack(pks, 1, np))
    np = 0
  end
end
if np > 0 then redis.call('SADD', rowsKey, unpack(pks, 1, np)) end
return {1, epoch}
`;

/**
 * SEAL the open bucket when it has data and has been open at least minAgeMs: advance the epoch and append the
 * sealed seq to the sealed list. KEYS: [tag]. ARGV: now, minAgeMs. Returns the sealed seq or false.
 */
export const SEAL = `
local tag = KEYS[1]
local epoch = redis.call('GET', tag .. '${S.epoch}')
if not epoch then return false end
if redis.call('EXISTS', tag .. '${S.rows}' .. epoch) == 0 then return false end
local now = tonumber(ARGV[1])
if now - tonumber(epoch) < tonumber(ARGV[2]) then return false end
local nextEpoch = math.max(tonumber(epoch) + 1, now)
redis.call('SET', tag .. '${S.epoch}', string.format('%d', nextEpoch))
redis.call('RPUSH', tag .. '${S.sealed}', epoch)
return epoch
`;

/**
 * FOLD rows of sealed bucket `seq` into their outboxes. Idempotent per row: a row whose bucket hash is gone
 * was folded already. KEYS: [tag]. ARGV: seq, now, then per row: pk, policyKind, a, b, rankEntity, rankMember
 * (rankEntity '' = not ranked). Ranked rows add their day counts to daily ranking zsets (top lists).
 * Returns the number of rows moved.
 */
export const FOLD = `${DUE}
local tag = KEYS[1]
local seq = ARGV[1]
local now = tonumber(ARGV[2])
local rowsKey = tag .. '${S.rows}' .. seq
local moved = 0
for i = 3, #ARGV, 6 do
  local pk = ARGV[i]
  local key = tag .. '${S.bucket}' .. seq .. ':' .. pk
  local data = redis.call('HGETALL', key)
  if #data > 0 then
    local outbox = tag .. '${S.outbox}' .. pk
    local rankEntity = ARGV[i + 4]
    for j = 1, #data, 2 do
      redis.call('HINCRBY', outbox, seq .. '|' .. data[j], data[j + 1])
      if rankEntity ~= '' and not string.find(data[j], '#', 1, true) then
        local bar = string.find(data[j], '|', 1, true)
        local rkey = tag .. '${S.rank}' .. string.sub(data[j], 1, bar - 1) .. ':' .. string.sub(data[j], bar + 1) .. ':' .. rankEntity
        redis.call('ZINCRBY', rkey, data[j + 1], ARGV[i + 5])
        redis.call('EXPIRE', rkey, 8640000)
      end
    end
    redis.call('DEL', key)
    redis.call('HINCRBY', tag .. '${S.counts}', 'entries', #data / 2)
    redis.call('ZADD', tag .. '${S.dirty}', 'NX', string.format('%d', now), pk)
    schedule(tag, pk, now, ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]))
    moved = moved + 1
  end
  redis.call('SREM', rowsKey, pk)
end
return moved
`;

/**
 * FINISH the fold of `seq`: only when it is the oldest sealed bucket and all its rows are folded, pop it and
 * advance foldedThrough. KEYS: [tag]. ARGV: seq. Returns 1 done, 0 not the head (someone else finished it),
 * -1 rows remain.
 */
export const FINISH_FOLD = `
local tag = KEYS[1]
if redis.call('LINDEX', tag .. '${S.sealed}', 0) ~= ARGV[1] then return 0 end
if redis.call('SCARD', tag .. '${S.rows}' .. ARGV[1]) > 0 then return -1 end
redis.call('LPOP', tag .. '${S.sealed}')
redis.call('SET', tag .. '${S.folded}', ARGV[1])
return 1
`;

/**
 * READ a row's outbox for the writer. KEYS: [tag]. ARGV: pk. Returns {foldedThrough or '', field, value, ...}.
 */
export const READ_OUTBOX = `
local tag = KEYS[1]
local folded = redis.call('GET', tag .. '${S.folded}') or ''
local data = redis.call('HGETALL', tag .. '${S.outbox}' .. ARGV[1])
table.insert(data, 1, folded)
return data
`;

/**
 * ACK outbox entries the writer has applied to DynamoDB, in one step with dropping the row's cache entry and
 * bumping its cache version (so no query can store a cache read before this write). When entries remain
 * (folded during the write) the row stays dirty and is rescheduled by its policy. The store's running count of
 * outbox entries drops by the entries deleted (and restarts at 0 whenever the store has no dirty row left).
 * KEYS: [tag]. ARGV: pk, now, policyKind, a, b, fields... Returns the number of entries left.
 */
export const ACK_OUTBOX = `${DUE}
local tag = KEYS[1]
local pk = ARGV[1]
local now = tonumber(ARGV[2])
local outbox = tag .. '${S.outbox}' .. pk
local deleted = 0
for i = 6, #ARGV, 500 do
  deleted = deleted + redis.call('HDEL', outbox, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('DEL', tag .. '${S.cache}' .. pk)
redis.call('INCR', tag .. '${S.cacheVersion}' .. pk)
redis.call('EXPIRE', tag .. '${S.cacheVersion}' .. pk, 172800)
local left = redis.call('HLEN', outbox)
if left == 0 then
  redis.call('ZREM', tag .. '${S.dirty}', pk)
  redis.call('ZREM', tag .. '${S.due}', pk)
else
  redis.call('ZADD', tag .. '${S.dirty}', string.format('%d', now), pk)
  redis.call('ZREM', tag .. '${S.due}', pk)
  schedule(tag, pk, now, ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
end
if redis.call('ZCARD', tag .. '${S.dirty}') == 0 then
  redis.call('HDEL', tag .. '${S.counts}', 'entries')
else
  redis.call('HINCRBY', tag .. '${S.counts}', 'entries', -deleted)
end
return left
`;

/**
 * SNAPSHOT, for a query, every Redis entry of the given rows not yet in DynamoDB — outbox, sealed-unfolded and
 * open buckets — each with its bucket seq, plus each row's cache entry and cache version.
 * KEYS: [tag]. ARGV: withCache ('1'|'0'), then per pk: pk, knownVersion ('' = none).
 * Returns { {pk entries: seq|day|metric, value, ...}, cacheJson or false (or '=' when the caller already holds
 * the cache at the current version), cacheVersion or '0' } per pk.
 */
export const SNAPSHOT = `
local tag = KEYS[1]
local buckets = redis.call('LRANGE', tag .. '${S.sealed}', 0, -1)
local epoch = redis.call('GET', tag .. '${S.epoch}')
if epoch then table.insert(buckets, epoch) end
local out = {}
for i = 2, #ARGV, 2 do
  local pk = ARGV[i]
  local entries = redis.call('HGETALL', tag .. '${S.outbox}' .. pk)
  for _, seq in ipairs(buckets) do
    local data = redis.call('HGETALL', tag .. '${S.bucket}' .. seq .. ':' .. pk)
    for j = 1, #data, 2 do
      table.insert(entries, seq .. '|' .. data[j])
      table.insert(entries, data[j + 1])
    end
  end
  local cache = false
  local version = '0'
  if ARGV[1] == '1' then
    version = redis.call('GET', tag .. '${S.cacheVersion}' .. pk) or '0'
    if ARGV[i + 1] ~= '' and ARGV[i + 1] == version then
      cache = '='
    else
      cache = redis.call('GET', tag .. '${S.cache}' .. pk) or false
    end
  end
  table.insert(out, {entries, cache, version})
end
return out
`;

/**
 * FILL a row's cache with DynamoDB items read by a query, only if the writer has not acked anything for the
 * row since the query's snapshot (same cache version). KEYS: [tag]. ARGV: pk, version, json, ttlSeconds.
 */
export const FILL_CACHE = `
local tag = KEYS[1]
local current = redis.call('GET', tag .. '${S.cacheVersion}' .. ARGV[1]) or '0'
if current ~= ARGV[2] then return 0 end
redis.call('SET', tag .. '${S.cache}' .. ARGV[1], ARGV[3], 'EX', ARGV[4])
return 1
`;

/**
 * TOP members of a ranked entity over some days: KEYS: [tag]. ARGV: tmpSuffix, limit, rankKeySuffixes...
 * Returns member, score, ... highest first.
 */
export const TOP = `
local tag = KEYS[1]
local keys = {}
for i = 3, #ARGV do table.insert(keys, tag .. ARGV[i]) end
if #keys == 0 then return {} end
local tmp = tag .. ARGV[1]
redis.call('ZUNIONSTORE', tmp, #keys, unpack(keys))
local out = redis.call('ZRANGE', tmp, 0, tonumber(ARGV[2]) - 1, 'REV', 'WITHSCORES')
redis.call('DEL', tmp)
return out
`;

/** Refresh the TTL of a cached row (the session is still active). KEYS: [tag]. ARGV: pk, ttlSeconds. */
export const TOUCH_CACHE = `
return redis.call('EXPIRE', KEYS[1] .. '${S.cache}' .. ARGV[1], ARGV[2])
`;
