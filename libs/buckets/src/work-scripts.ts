import { REDIS_SUFFIX as S } from '@tally/key-layout';
import { TOMBSTONES } from './scripts';

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
${TOMBSTONES}
local tag = KEYS[1]
if storeDeleted(tag) then return {'', '', 0, '', '0', 0, ''} end
local now = tonumber(ARGV[1])
-- Read phase: everything reported, read with commands that fail on a wrong type before anything is written.
local epoch = redis.call('GET', tag .. '${S.epoch}')
local openHasData = epoch and redis.call('EXISTS', tag .. '${S.rows}' .. epoch) == 1
local head = redis.call('LINDEX', tag .. '${S.sealed}', 0) or ''
local first = redis.call('ZRANGE', tag .. '${S.dirty}', 0, 0, 'WITHSCORES')
local rows = redis.call('ZCARD', tag .. '${S.dirty}')
local entries = redis.call('HGET', tag .. '${S.counts}', 'entries') or '0'
local due = redis.call('ZCOUNT', tag .. '${S.due}', '-inf', ARGV[1])
-- Write phase (as SEAL): commands that cannot fail on the keys read above.
local sealed = ''
if openHasData and now - tonumber(epoch) >= tonumber(ARGV[2]) then
  redis.call('SET', tag .. '${S.epoch}', string.format('%d', math.max(tonumber(epoch) + 1, now)))
  redis.call('RPUSH', tag .. '${S.sealed}', epoch)
  sealed = epoch
  if head == '' then head = epoch end
  openHasData = false
end
local unfolded = head
if unfolded == '' and openHasData then unfolded = epoch end
return {sealed, head, rows, first[2] or '', entries, due, unfolded}
`;

/**
 * PUBLISH stores' backlogs into their work-set shard and keep the shard's totals equal to the sum of its stores'.
 * KEYS: [active, stats, totals, oldestDirty, oldestUnfolded]. ARGV, per store: store, rows, entries, oldestDirty
 * ('' = none), oldestUnfolded ('' = none), mark ('' = never retire).
 * Only a store in the active set is published (a late publish cannot resurrect a retired store). When `mark` is
 * given, the store has nothing left (no dirty row, nothing unfolded) and its mark is still `mark` (no apply since
 * the caller read it), the store is retired: removed from the set with its stats. Returns per store 0 not
 * active, 1 published, 2 retired. All arguments and stored numbers are checked before the first write (the call is
 * refused whole with an error reply otherwise), and the totals are written once, at the end.
 */
export const PUBLISH_BACKLOG = `#!lua
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
local function int(v) return type(v) == 'string' and string.match(v, '^-?%d+$') ~= nil and #v < 16 end
local function optInt(v) return v == '' or int(v) end
-- Read phase: every argument and every stored number checked, every key's type checked; nothing written yet.
expectType(KEYS[1], 'zset')
expectType(KEYS[2], 'hash')
expectType(KEYS[3], 'hash')
expectType(KEYS[4], 'zset')
expectType(KEYS[5], 'zset')
local totals = redis.call('HMGET', KEYS[3], 'rows', 'entries')
for k = 1, 2 do
  if totals[k] and not int(totals[k]) then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. KEYS[3] .. ' holds a non-integer total') end
  totals[k] = tonumber(totals[k]) or 0
end
local seen = {} -- store -> {mark or false, rows, entries} as left by earlier stores of this call
local writes = {}
local out = {}
for i = 1, #ARGV, 6 do
  local store = ARGV[i]
  if not (int(ARGV[i + 1]) and int(ARGV[i + 2]) and optInt(ARGV[i + 3]) and optInt(ARGV[i + 4])) then
    return redis.error_reply('TALLY_ERR_ARGUMENT backlog of ' .. store .. ' is not integers')
  end
  local st = seen[store]
  if not st then
    local old = redis.call('HMGET', KEYS[2], store .. '|r', store .. '|e')
    for k = 1, 2 do
      if old[k] and not int(old[k]) then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. KEYS[2] .. ' ' .. store .. ' holds a non-integer') end
    end
    st = {redis.call('ZSCORE', KEYS[1], store) or false, tonumber(old[1]) or 0, tonumber(old[2]) or 0}
    seen[store] = st
  end
  local mark = st[1]
  if not mark then
    table.insert(out, 0)
  else
    local rows = tonumber(ARGV[i + 1])
    local entries = tonumber(ARGV[i + 2])
    local retire = ARGV[i + 5] ~= '' and rows == 0 and ARGV[i + 4] == '' and tonumber(mark) == tonumber(ARGV[i + 5])
    if retire then
      rows = 0
      entries = 0
    end
    totals[1] = totals[1] + rows - st[2]
    totals[2] = totals[2] + entries - st[3]
    if retire then
      seen[store] = {false, 0, 0}
      table.insert(writes, {store, true})
      table.insert(out, 2)
    else
      seen[store] = {mark, rows, entries}
      table.insert(writes, {store, false, rows, entries, ARGV[i + 3], ARGV[i + 4]})
      table.insert(out, 1)
    end
  end
end
-- Write phase: commands that cannot fail on the keys checked above.
for _, w in ipairs(writes) do
  local store = w[1]
  if w[2] then
    redis.call('ZREM', KEYS[1], store)
    redis.call('HDEL', KEYS[2], store .. '|r', store .. '|e')
    redis.call('ZREM', KEYS[4], store)
    redis.call('ZREM', KEYS[5], store)
  else
    redis.call('HSET', KEYS[2], store .. '|r', string.format('%d', w[3]), store .. '|e', string.format('%d', w[4]))
    if w[5] == '' then redis.call('ZREM', KEYS[4], store) else redis.call('ZADD', KEYS[4], w[5], store) end
    if w[6] == '' then redis.call('ZREM', KEYS[5], store) else redis.call('ZADD', KEYS[5], w[6], store) end
  end
end
if #writes > 0 then
  redis.call('HSET', KEYS[3], 'rows', string.format('%d', totals[1]), 'entries', string.format('%d', totals[2]))
end
return out
`;
