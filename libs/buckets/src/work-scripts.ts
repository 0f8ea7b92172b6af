import { defineScript } from './script-table';
import { DUE_LIST, type Stale } from './scripts';

/**
 * Scripts of the sealer's work set. VISIT runs on one store's keys (its hash tag); PUBLISH_BACKLOG on one
 * work-set shard's keys, never on a store's (another slot under Redis Cluster). Both declare every key in KEYS.
 */

/** VISIT's answer when not stale (see VISIT). */
export type VisitReply = [1, string, string, number, string, string, number, string, string, string[], string[] | 0];

/**
 * VISIT a store for a sealer tick, in one round trip: seal the open bucket when it has data and has been open at
 * least minAgeMs (as SEAL), then report what is left. KEYS: epoch, rows (the row set of bucket `epoch`), sealed,
 * dirty, counts, due. ARGV: now, minAgeMs, epoch (the seq the rows key is built for; '' when unknown), dueLimit,
 * pksLimit.
 * Returns {1, sealedSeq or '', oldest sealed seq or '', dirty rows, oldest dirty time or '', outbox entries,
 * rows due at now, oldest unfolded seq or '', the epoch after the visit or '', the due list (pk, oldest dirty
 * time, ... at most dueLimit rows), the rows of the bucket sealed now when it is the oldest sealed one and has at
 * most pksLimit rows (else 0)}, or a stale reply {0, epoch} (nothing written) when the store's epoch is not `epoch`.
 */
export const VISIT = defineScript<VisitReply | Stale>()({
  name: 'VISIT',
  shebang: '#!lua',
  keys: ['epoch', 'rows', 'sealed', 'dirty', 'counts', 'due'],
  args: ['now', 'minAgeMs', 'epoch', 'dueLimit', 'pksLimit'],
  body: `${DUE_LIST}
local now = tonumber(A.now)
-- Read phase: everything reported, read with commands that fail on a wrong type before anything is written.
local epoch = redis.call('GET', K.epoch)
if epoch and epoch ~= A.epoch then return {0, epoch} end
local openRows = epoch and redis.call('SCARD', K.rows) or 0
local openHasData = openRows > 0
local head = redis.call('LINDEX', K.sealed, 0) or ''
local first = redis.call('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
local rows = redis.call('ZCARD', K.dirty)
local entries = redis.call('HGET', K.counts, 'entries') or '0'
local due = redis.call('ZCOUNT', K.due, '-inf', A.now)
local dueRows = {}
if due > 0 then dueRows = dueList(K.due, K.dirty, A.now, tonumber(A.dueLimit)) end
-- Write phase (as SEAL): commands that cannot fail on the keys read above.
local sealed = ''
local pks = 0
if openHasData and now - tonumber(epoch) >= tonumber(A.minAgeMs) then
  epoch = string.format('%d', math.max(tonumber(epoch) + 1, now))
  redis.call('SET', K.epoch, epoch)
  redis.call('RPUSH', K.sealed, A.epoch)
  sealed = A.epoch
  if head == '' then
    head = sealed
    if openRows <= tonumber(A.pksLimit) then pks = redis.call('SMEMBERS', K.rows) end
  end
  openHasData = false
end
local unfolded = head
if unfolded == '' and openHasData then unfolded = epoch end
return {1, sealed, head, rows, first[2] or '', entries, due, unfolded, epoch or '', dueRows, pks}
`,
});

/**
 * PUBLISH stores' backlogs into their work-set shard and keep the shard's totals equal to the sum of its stores'.
 * KEYS: active, stats, totals, oldestDirty, oldestUnfolded. ARGV, per store: store, rows, entries, oldestDirty
 * ('' = none), oldestUnfolded ('' = none), mark ('' = never retire).
 * Only a store in the active set is published (a late publish cannot resurrect a retired store). When `mark` is
 * given, the store has nothing left (no dirty row, nothing unfolded) and its mark is still `mark` (no apply since
 * the caller read it), the store is retired: removed from the set with its stats. Returns per store 0 not
 * active, 1 published, 2 retired. All arguments and stored numbers are checked before the first write (the call is
 * refused whole with an error reply otherwise), and the totals are written once, at the end.
 */
export const PUBLISH_BACKLOG = defineScript<number[]>()({
  name: 'PUBLISH_BACKLOG',
  shebang: '#!lua',
  keys: ['active', 'stats', 'totals', 'oldestDirty', 'oldestUnfolded'],
  args: [],
  body: `
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
local function int(v) return type(v) == 'string' and string.match(v, '^-?%d+$') ~= nil and #v < 16 end
local function optInt(v) return v == '' or int(v) end
local function count(v) return int(v) and string.sub(v, 1, 1) ~= '-' end
-- Read phase: every argument and every stored number checked, every key's type checked; nothing written yet.
expectType(K.active, 'zset')
expectType(K.stats, 'hash')
expectType(K.totals, 'hash')
expectType(K.oldestDirty, 'zset')
expectType(K.oldestUnfolded, 'zset')
local totals = redis.call('HMGET', K.totals, 'rows', 'entries')
for k = 1, 2 do
  if totals[k] and not int(totals[k]) then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.totals .. ' holds a non-integer total') end
  totals[k] = tonumber(totals[k]) or 0
end
local seen = {} -- store -> {mark or false, rows, entries} as left by earlier stores of this call
local writes = {}
local out = {}
for i = AR, #ARGV, 6 do
  local store = ARGV[i]
  if not (count(ARGV[i + 1]) and count(ARGV[i + 2]) and optInt(ARGV[i + 3]) and optInt(ARGV[i + 4])) then
    return redis.error_reply('TALLY_ERR_ARGUMENT backlog of ' .. store .. ' is not non-negative integers')
  end
  local st = seen[store]
  if not st then
    local old = redis.call('HMGET', K.stats, store .. '|r', store .. '|e')
    for k = 1, 2 do
      if old[k] and not int(old[k]) then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.stats .. ' ' .. store .. ' holds a non-integer') end
    end
    st = {redis.call('ZSCORE', K.active, store) or false, tonumber(old[1]) or 0, tonumber(old[2]) or 0}
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
    redis.call('ZREM', K.active, store)
    redis.call('HDEL', K.stats, store .. '|r', store .. '|e')
    redis.call('ZREM', K.oldestDirty, store)
    redis.call('ZREM', K.oldestUnfolded, store)
  else
    redis.call('HSET', K.stats, store .. '|r', string.format('%d', w[3]), store .. '|e', string.format('%d', w[4]))
    if w[5] == '' then redis.call('ZREM', K.oldestDirty, store) else redis.call('ZADD', K.oldestDirty, w[5], store) end
    if w[6] == '' then redis.call('ZREM', K.oldestUnfolded, store) else redis.call('ZADD', K.oldestUnfolded, w[6], store) end
  end
end
if #writes > 0 then
  -- Gauges: never below 0, even from totals an older version left inconsistent.
  redis.call('HSET', K.totals, 'rows', string.format('%d', math.max(0, totals[1])), 'entries', string.format('%d', math.max(0, totals[2])))
end
return out
`,
});
