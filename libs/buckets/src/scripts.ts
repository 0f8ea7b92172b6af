import { REDIS_SUFFIX as S } from '@tally/key-layout';

/**
 * Lua scripts: each runs atomically on one store's keys (one hash tag). KEYS[1] is the store's tag prefix
 * `<p>:{store}:`; the scripts append REDIS_SUFFIX names. Numbers that can exceed 2^31 are formatted with
 * %d, never tostring (which would print 1.7e+12).
 *
 * The rule of every script (README "How counts move exactly once"): all reads and checks first, then the
 * writes, and no write can fail. Redis does not roll a script back, so an error after the first write would
 * leave half a change behind. Hence:
 * - every script starts with a `#!lua` shebang: a script that may write is refused whole (OOM error, nothing
 *   run) while Redis is over maxmemory under `noeviction`, and is never stopped by OOM once it runs;
 *   read-only scripts say `flags=no-writes`;
 * - the read phase touches every key the write phase writes with a command that fails on a wrong type (HMGET,
 *   HLEN, LLEN, ZSCORE, GET, or TYPE), and checks every number it will write;
 * - counts never go through HINCRBY: a count is kept in base-10^15 limbs (see LIMBS) that the read phase
 *   adds up exactly in Lua doubles, refusing a sum over 38 digits with an error reply before writing anything.
 */

/** Limb arithmetic shared by the scripts that add counts: exact in Lua doubles since every limb stays < 2^53. */
const LIMBS = `
local BASE = 1e15
-- Adds the non-negative decimal string s, times 10^(15 (k - 1)), into the limbs acc[1..3] (base 10^15);
-- false when s is not such a string or does not fit the three limbs.
local function addDecimal(acc, s, k)
  if type(s) ~= 'string' or not string.match(s, '^%d+$') then return false end
  local pos = #s
  while pos > 0 do
    local from = math.max(1, pos - 14)
    if k > 3 then
      if tonumber(string.sub(s, 1, pos)) ~= 0 then return false end
      return true
    end
    acc[k] = acc[k] + tonumber(string.sub(s, from, pos))
    pos = from - 1
    k = k + 1
  end
  return true
end
-- Carries so that acc[1], acc[2] < 10^15; false when the value has more than 38 digits (DynamoDB's limit).
local function normalize(acc)
  for k = 1, 2 do
    local c = math.floor(acc[k] / BASE)
    acc[k] = acc[k] - c * BASE
    acc[k + 1] = acc[k + 1] + c
  end
  return acc[3] < 1e8
end
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
-- The store's running count of outbox entries (a gauge, not a count: a plain integer, 0 when absent), or nil
-- when the field holds anything else. Checks the hash's type, so a later HSET/HDEL on it cannot fail.
local function readEntries(key)
  expectType(key, 'hash')
  local v = redis.call('HGET', key, 'entries')
  if not v then return 0 end
  if not (string.match(v, '^-?%d+$') and #v < 16) then return nil end
  return tonumber(v)
end
`;

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
 * KEYS: [tag, dedupeKey]. ARGV: now, dedupeTtlSeconds, rowCount, then per row: pk, fieldCount, (field, delta)*,
 * each delta a non-negative decimal string. A count `f` is held in limbs: field `f` (units mod 10^15), `f|1`
 * (the next 15 digits) and `f|2` (the rest), written only when non-zero or already present.
 * Returns {1, seq} when applied, {0, 0} when the batch id was already applied (a redelivery). Refuses the
 * whole batch, writing nothing, with an error reply `TALLY_ERR_SUM_OVERFLOW` when a count would exceed 38
 * digits and `TALLY_ERR_NOT_A_COUNT` when a delta or a stored count is not a non-negative integer.
 * The epoch is read inside the script, so once the sealer advanced it the sealed bucket can never change.
 */
export const APPLY = `#!lua
${LIMBS}
local tag = KEYS[1]
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
if not string.match(ARGV[2], '^[1-9]%d*$') then return redis.error_reply('TALLY_ERR_ARGUMENT dedupe TTL must be at least 1 s') end
local epoch = redis.call('GET', tag .. '${S.epoch}')
local newEpoch = not epoch
if newEpoch then epoch = ARGV[1] end
local rowsKey = tag .. '${S.rows}' .. epoch
expectType(rowsKey, 'set')
local bucketPrefix = tag .. '${S.bucket}' .. epoch .. ':'
-- Read phase: every row's current limbs, the new limbs, all checked. Nothing is written yet.
local writes = {}
local pks = {}
local i = 4
for r = 1, tonumber(ARGV[3]) do
  local pk = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local key = bucketPrefix .. pk
  local out = {}
  for c = 0, n - 1, 500 do
    local m = math.min(500, n - c)
    local names = {}
    for f = 0, m - 1 do
      local name = ARGV[i + 2 * (c + f)]
      names[3 * f + 1] = name
      names[3 * f + 2] = name .. '|1'
      names[3 * f + 3] = name .. '|2'
    end
    local cur = redis.call('HMGET', key, unpack(names))
    for f = 0, m - 1 do
      local name = names[3 * f + 1]
      local acc = {0, 0, 0}
      local ok = addDecimal(acc, ARGV[i + 2 * (c + f) + 1], 1)
      for k = 1, 3 do
        if ok and cur[3 * f + k] then ok = addDecimal(acc, cur[3 * f + k], k) end
      end
      if not ok then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. pk .. ' ' .. name .. ': the delta or a stored count is not a non-negative integer') end
      if not normalize(acc) then return redis.error_reply('TALLY_ERR_SUM_OVERFLOW ' .. pk .. ' ' .. name .. ': the bucket sum would exceed 38 digits') end
      table.insert(out, name)
      table.insert(out, string.format('%d', acc[1]))
      for k = 2, 3 do
        if acc[k] ~= 0 or cur[3 * f + k] then
          table.insert(out, names[3 * f + k])
          table.insert(out, string.format('%d', acc[k]))
        end
      end
    end
  end
  i = i + 2 * n
  writes[r] = {key, out}
  pks[r] = pk
end
-- Write phase: commands that cannot fail on the keys checked above.
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if newEpoch then redis.call('SET', tag .. '${S.epoch}', epoch) end
for _, w in ipairs(writes) do
  local out = w[2]
  for c = 1, #out, 1000 do redis.call('HSET', w[1], unpack(out, c, math.min(c + 999, #out))) end
end
for c = 1, #pks, 2000 do redis.call('SADD', rowsKey, unpack(pks, c, math.min(c + 1999, #pks))) end
return {1, epoch}
`;

/**
 * SEAL the open bucket when it has data and has been open at least minAgeMs: advance the epoch and append the
 * sealed seq to the sealed list. KEYS: [tag]. ARGV: now, minAgeMs. Returns the sealed seq or false.
 */
export const SEAL = `#!lua
local tag = KEYS[1]
local epoch = redis.call('GET', tag .. '${S.epoch}')
if not epoch then return false end
if redis.call('EXISTS', tag .. '${S.rows}' .. epoch) == 0 then return false end
local now = tonumber(ARGV[1])
if now - tonumber(epoch) < tonumber(ARGV[2]) then return false end
redis.call('LLEN', tag .. '${S.sealed}') -- fails on a wrong type before anything is written
local nextEpoch = math.max(tonumber(epoch) + 1, now)
redis.call('SET', tag .. '${S.epoch}', string.format('%d', nextEpoch))
redis.call('RPUSH', tag .. '${S.sealed}', epoch)
return epoch
`;

/**
 * FOLD rows of sealed bucket `seq` into their outboxes. Idempotent per row: a row whose bucket hash is gone
 * was folded already. KEYS: [tag]. ARGV: seq, now, then per row: pk, policyKind, a, b, rankEntity, rankMember
 * (rankEntity '' = not ranked). Ranked rows add their day counts to daily ranking zsets (top lists; a limb
 * `f|k` adds its value times 10^(15k) to f's ranking, which orders but need not be exact).
 * The outbox fields `<seq>|<bucket field>` are new (only this fold of this bucket writes them), so the copy is
 * an HSET of the bucket's values; an existing one means the layout was broken and the call is refused whole.
 * The store's running count of outbox entries (`entries` in the counts hash) grows by the fields copied.
 * Returns the number of rows moved.
 */
export const FOLD = `#!lua
${LIMBS}${DUE}
local tag = KEYS[1]
local seq = ARGV[1]
local now = tonumber(ARGV[2])
local rowsKey = tag .. '${S.rows}' .. seq
expectType(rowsKey, 'set')
expectType(tag .. '${S.dirty}', 'zset')
expectType(tag .. '${S.due}', 'zset')
local countsKey = tag .. '${S.counts}'
local entries = readEntries(countsKey)
if not entries then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. countsKey .. ' entries is not an integer') end
-- Read phase: every row's bucket, its outbox and ranking keys checked; nothing written yet.
local rows = {}
for i = 3, #ARGV, 6 do
  local pk = ARGV[i]
  local key = tag .. '${S.bucket}' .. seq .. ':' .. pk
  local data = redis.call('HGETALL', key)
  local row = {pk = pk, key = key, data = data, i = i, ranks = {}}
  if #data > 0 then
    local outbox = tag .. '${S.outbox}' .. pk
    expectType(outbox, 'hash')
    local names = {}
    for j = 1, #data, 2 do
      if not string.match(data[j + 1], '^%d+$') then
        return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. key .. ' ' .. data[j] .. ' is not a non-negative integer')
      end
      table.insert(names, seq .. '|' .. data[j])
    end
    for c = 1, #names, 1000 do
      local cur = redis.call('HMGET', outbox, unpack(names, c, math.min(c + 999, #names)))
      for k = 1, #cur do
        if cur[k] then return redis.error_reply('TALLY_ERR_FOLD_CONFLICT ' .. outbox .. ' already has ' .. names[c + k - 1]) end
      end
    end
    row.outbox = outbox
    row.names = names
    local rankEntity = ARGV[i + 4]
    if rankEntity ~= '' then
      for j = 1, #data, 2 do
        local field = data[j]
        if not string.find(field, '#', 1, true) then
          local bar = string.find(field, '|', 1, true)
          local metric = string.sub(field, bar + 1)
          local score = tonumber(data[j + 1])
          local bar2 = string.find(metric, '|', 1, true)
          if bar2 then
            score = score * BASE ^ tonumber(string.sub(metric, bar2 + 1))
            metric = string.sub(metric, 1, bar2 - 1)
          end
          local rkey = tag .. '${S.rank}' .. string.sub(field, 1, bar - 1) .. ':' .. metric .. ':' .. rankEntity
          expectType(rkey, 'zset')
          table.insert(row.ranks, {rkey, score})
        end
      end
    end
  end
  table.insert(rows, row)
end
-- Write phase.
local moved = 0
for _, row in ipairs(rows) do
  local pk = row.pk
  local i = row.i
  if #row.data > 0 then
    local data = row.data
    local pairs_ = {}
    for j = 1, #data, 2 do
      table.insert(pairs_, row.names[(j + 1) / 2])
      table.insert(pairs_, data[j + 1])
    end
    for c = 1, #pairs_, 1000 do redis.call('HSET', row.outbox, unpack(pairs_, c, math.min(c + 999, #pairs_))) end
    for _, rk in ipairs(row.ranks) do
      redis.call('ZINCRBY', rk[1], rk[2], ARGV[i + 5])
      redis.call('EXPIRE', rk[1], 8640000)
    end
    redis.call('DEL', row.key)
    entries = entries + #data / 2
    redis.call('ZADD', tag .. '${S.dirty}', 'NX', string.format('%d', now), pk)
    schedule(tag, pk, now, ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]))
    moved = moved + 1
  end
  redis.call('SREM', rowsKey, pk)
end
if moved > 0 then redis.call('HSET', countsKey, 'entries', string.format('%d', entries)) end
return moved
`;

/**
 * FINISH the fold of `seq`: only when it is the oldest sealed bucket and all its rows are folded, pop it and
 * advance foldedThrough. KEYS: [tag]. ARGV: seq. Returns 1 done, 0 not the head (someone else finished it),
 * -1 rows remain.
 */
export const FINISH_FOLD = `#!lua
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
export const READ_OUTBOX = `#!lua flags=no-writes
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
export const ACK_OUTBOX = `#!lua
${LIMBS}${DUE}
local tag = KEYS[1]
local pk = ARGV[1]
local now = tonumber(ARGV[2])
local outbox = tag .. '${S.outbox}' .. pk
local versionKey = tag .. '${S.cacheVersion}' .. pk
-- Read phase: the types of every key written below, and the cache version INCR will bump.
redis.call('HLEN', outbox)
expectType(tag .. '${S.dirty}', 'zset')
expectType(tag .. '${S.due}', 'zset')
local countsKey = tag .. '${S.counts}'
local entries = readEntries(countsKey)
if not entries then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. countsKey .. ' entries is not an integer') end
local version = redis.call('GET', versionKey)
if version and not (string.match(version, '^%d+$') and #version < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. versionKey .. ' is not a cache version')
end
-- Write phase.
local deleted = 0
for i = 6, #ARGV, 500 do
  deleted = deleted + redis.call('HDEL', outbox, unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
redis.call('DEL', tag .. '${S.cache}' .. pk)
redis.call('INCR', versionKey)
redis.call('EXPIRE', versionKey, 172800)
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
  redis.call('HDEL', countsKey, 'entries')
else
  redis.call('HSET', countsKey, 'entries', string.format('%d', entries - deleted))
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
export const SNAPSHOT = `#!lua flags=no-writes
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
export const FILL_CACHE = `#!lua
local tag = KEYS[1]
local current = redis.call('GET', tag .. '${S.cacheVersion}' .. ARGV[1]) or '0'
if current ~= ARGV[2] then return 0 end
redis.call('SET', tag .. '${S.cache}' .. ARGV[1], ARGV[3], 'EX', ARGV[4])
return 1
`;

/**
 * TOP members of a ranked entity over some days, from every bucket: the daily rankings (buckets folded so far)
 * plus the counts of the entity's rows in the buckets not folded yet (sealed ones and the open one), so a member
 * seen only in the open bucket ranks at once. KEYS: [tag]. ARGV: tmpSuffix, limit, rankMetric, rankEntity,
 * pkPrefix (`<store>#<entity>#`: a row's member is the rest of its pk), dayKeys... A limb `f|k` counts its value
 * times 10^(15k), as in FOLD. Rankings order; they need not be exact. Returns member, score, ... highest first.
 * A bucket row is either still in its bucket hash or folded into the rankings (FOLD deletes the hash in the step
 * that ranks it), so no count is ranked twice. Cost: one pass over the rows of the unfolded buckets.
 */
export const TOP = `#!lua
local tag = KEYS[1]
local metric = ARGV[3]
local prefix = ARGV[5]
local keys = {}
local days = {}
for i = 6, #ARGV do
  table.insert(keys, tag .. '${S.rank}' .. ARGV[i] .. ':' .. metric .. ':' .. ARGV[4])
  days[ARGV[i]] = true
end
if #keys == 0 then return {} end
-- Read phase: the unfolded buckets' rows of the entity, summed per member for the days and metric asked.
local buckets = redis.call('LRANGE', tag .. '${S.sealed}', 0, -1)
local epoch = redis.call('GET', tag .. '${S.epoch}')
if epoch then table.insert(buckets, epoch) end
local live = {}
for _, seq in ipairs(buckets) do
  for _, pk in ipairs(redis.call('SMEMBERS', tag .. '${S.rows}' .. seq)) do
    if string.sub(pk, 1, #prefix) == prefix then
      local member = string.sub(pk, #prefix + 1)
      local data = redis.call('HGETALL', tag .. '${S.bucket}' .. seq .. ':' .. pk)
      for j = 1, #data, 2 do
        local field = data[j]
        local bar = string.find(field, '|', 1, true)
        if bar and days[string.sub(field, 1, bar - 1)] then
          local m = string.sub(field, bar + 1)
          local score = tonumber(data[j + 1]) or 0
          local bar2 = string.find(m, '|', 1, true)
          if bar2 then
            score = score * 1e15 ^ (tonumber(string.sub(m, bar2 + 1)) or 0)
            m = string.sub(m, 1, bar2 - 1)
          end
          if m == metric then live[member] = (live[member] or 0) + score end
        end
      end
    end
  end
end
-- Write phase: a temporary union (ZUNIONSTORE fails on a wrong-typed ranking before it writes anything).
local tmp = tag .. ARGV[1]
redis.call('ZUNIONSTORE', tmp, #keys, unpack(keys))
for member, score in pairs(live) do redis.call('ZINCRBY', tmp, score, member) end
local out = redis.call('ZRANGE', tmp, 0, tonumber(ARGV[2]) - 1, 'REV', 'WITHSCORES')
redis.call('DEL', tmp)
return out
`;

/** Refresh the TTL of a cached row (the session is still active). KEYS: [tag]. ARGV: pk, ttlSeconds. */
export const TOUCH_CACHE = `#!lua
return redis.call('EXPIRE', KEYS[1] .. '${S.cache}' .. ARGV[1], ARGV[2])
`;
