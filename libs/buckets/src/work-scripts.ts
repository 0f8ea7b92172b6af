import { defineScript } from './script-table';
import { DUE_LIST, TOMBSTONES, type Stale } from './scripts';

/**
 * Scripts of the sealer's work set. VISIT runs on one store's keys (its hash tag); PUBLISH_BACKLOG, REGISTER,
 * DUE_STORES and LEAVE_SHARD on one work-set shard's keys, never on a store's (another slot under Redis Cluster), and
 * never on two shards' (a store moved between shards is REGISTERed into one, then LEAVEs the other: two calls). All
 * declare every key in KEYS.
 */

/** Lua helpers of the scripts that check a work-set shard's keys and numbers before their first write (PUBLISH_BACKLOG, LEAVE_SHARD). */
const SHARD_CHECKS = `
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
local function int(v) return type(v) == 'string' and string.match(v, '^-?%d+$') ~= nil and #v < 16 end
-- The shard's keys (KEYS active, stats, totals, oldestDirty, oldestUnfolded, next) of the right types, and its totals
-- {rows, entries}; nil when a total is not an integer.
local function shardTotals()
  expectType(K.active, 'zset')
  expectType(K.stats, 'hash')
  expectType(K.totals, 'hash')
  expectType(K.oldestDirty, 'zset')
  expectType(K.oldestUnfolded, 'zset')
  expectType(K.next, 'zset')
  local totals = redis.call('HMGET', K.totals, 'rows', 'entries')
  for k = 1, 2 do
    if totals[k] and not int(totals[k]) then return nil end
    totals[k] = tonumber(totals[k]) or 0
  end
  return totals
end
`;

/** VISIT's answer when not stale (see VISIT). */
export type VisitReply = [1, string, string, number, string, string, number, string, string, string[], string[] | 0, string];

/**
 * VISIT a store for a sealer tick, in one round trip: seal the open bucket when it has data and has been open at
 * least minAgeMs (as SEAL), then report what is left. KEYS: epoch, rows (the row set of bucket `epoch`), sealed,
 * dirty, counts, due, tombstone, dueLater. ARGV: now, minAgeMs, epoch (the seq the rows key is built for; '' when
 * unknown), dueLimit, pksLimit, leaseMs (the rows of the due list are leased for it, see DUE_LIST, when no sealed
 * bucket is left after the visit: else the caller folds first and the call that reports after the fold leases them;
 * 0: not leased).
 * Returns {1, sealedSeq or '', oldest sealed seq or '', dirty rows, oldest dirty time or '', outbox entries,
 * rows due at now (whose alarm fired, less those re-armed: see DUE_LIST), oldest unfolded seq or '', the epoch after
 * the visit or '', the due list (pk, oldest dirty time, ... at most dueLimit rows), the rows of the bucket sealed now
 * when it is the oldest sealed one and has at most pksLimit rows (else 0), the earliest due time of any row once the
 * due list is leased, or ''}, or a stale reply {0, epoch} (nothing written) when the store's epoch is not `epoch`.
 * When it returns the rows of the bucket sealed now (the caller folds them at once, and FOLD reports what is left),
 * the dirty rows, oldest dirty time, outbox entries and due list are not read (0, '', '0', 0, {}): a visit's cost
 * does not grow with the store's other rows. Fired alarms of idle rows whose flush time moved later are re-armed to
 * it (DUE_LIST), after the read phase.
 */
export const VISIT = defineScript<VisitReply | Stale>()({
  name: 'VISIT',
  shebang: '#!lua',
  keys: ['epoch', 'rows', 'sealed', 'dirty', 'counts', 'due', 'tombstone', 'dueLater'],
  args: ['now', 'minAgeMs', 'epoch', 'dueLimit', 'pksLimit', 'leaseMs'],
  body: `${DUE_LIST}${TOMBSTONES}
if storeDeleted() then return {1, '', '', 0, '', '0', 0, '', '', {}, 0, ''} end
local now = tonumber(A.now)
-- Read phase: everything reported, read with commands that fail on a wrong type before anything is written.
local epoch = redis.call('GET', K.epoch)
if epoch and epoch ~= A.epoch then return {0, epoch} end
local openRows = epoch and redis.call('SCARD', K.rows) or 0
local openHasData = openRows > 0
local head = redis.call('LINDEX', K.sealed, 0) or ''
local seal = openHasData and now - tonumber(epoch) >= tonumber(A.minAgeMs)
-- The bucket sealed now is folded by the caller at once (its rows are returned), and that fold reports what is left:
-- the backlog is not read here then (the store's other rows cost this visit nothing).
local folding = seal and head == '' and openRows <= tonumber(A.pksLimit)
local nextDue = redis.call('ZRANGE', K.due, 0, 0, 'WITHSCORES')[2] or ''
local first, rows, entries, due, dueRows, rearm, rearmPks = {}, 0, '0', 0, {}, {}, {}
if not folding then
  first = redis.call('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
  rows = redis.call('ZCARD', K.dirty)
  entries = redis.call('HGET', K.counts, 'entries') or '0'
  if nextDue ~= '' and tonumber(nextDue) <= now then
    -- (dueList's HMGET of dueLater fails on a wrong type here, in the read phase.)
    dueRows, rearm, rearmPks = dueList(K.due, K.dirty, K.dueLater, A.now, tonumber(A.dueLimit))
    due = redis.call('ZCOUNT', K.due, '-inf', A.now) - #rearmPks
  end
end
-- Write phase (as SEAL): commands that cannot fail on the keys read above.
rearmDue(K.due, K.dueLater, rearm, rearmPks)
-- Leased only when no sealed bucket is left: else the caller folds it first and takes the due rows from its next
-- visit (or FOLD's report), which leases them; a lease here would keep them from that one.
if head == '' and not seal then leaseDue(K.due, dueRows, now, tonumber(A.leaseMs)) end
if #rearmPks > 0 or #dueRows > 0 then nextDue = redis.call('ZRANGE', K.due, 0, 0, 'WITHSCORES')[2] or '' end
local sealed = ''
local pks = 0
if seal then
  epoch = string.format('%d', math.max(tonumber(epoch) + 1, now))
  redis.call('SET', K.epoch, epoch)
  redis.call('RPUSH', K.sealed, A.epoch)
  sealed = A.epoch
  if head == '' then
    head = sealed
    if folding then pks = redis.call('SMEMBERS', K.rows) end
  end
  openHasData = false
end
local unfolded = head
if unfolded == '' and openHasData then unfolded = epoch end
return {1, sealed, head, rows, first[2] or '', entries, due, unfolded, epoch or '', dueRows, pks, nextDue}
`,
});

/**
 * PUBLISH stores' backlogs into their work-set shard and keep the shard's totals equal to the sum of its stores'.
 * KEYS: active, stats, totals, oldestDirty, oldestUnfolded, next. ARGV: channel (the pub/sub channel of epoch hints;
 * '' = none), then per store: store, rows, entries, oldestDirty ('' = none), oldestUnfolded ('' = none), mark ('' =
 * never retire), visitAt ('' = leave its next visit time as it is), epoch (the open bucket's seq a sealer visit just
 * set; '' = none).
 * The stores given an epoch are announced on `channel` in one message, a JSON array store, epoch, ... (a hint
 * for other BucketStore instances: see BucketStore.followEpochs), whether they are in the work set or not.
 * Only a store in the active set is published (a late publish cannot resurrect a retired store). When `mark` is
 * given, the store has nothing left (no dirty row, nothing unfolded) and its mark is still `mark` (no apply since
 * the caller read it), the store is retired: removed from the set with its stats and next visit time. Otherwise
 * its next visit time becomes `visitAt` when its mark is still `mark`, and only moves earlier when it is not (an
 * apply since the caller read it may need an earlier visit than the caller saw). Likewise a store published with
 * nothing unfolded loses its oldest unfolded time only when its mark is still `mark`: else (no `mark`, as the
 * writer's, or an apply since) the time an apply's REGISTER set stays until a sealer visit. Returns per store 0 not
 * active, 1 published, 2 retired. All arguments and stored numbers are checked before the first write (the call is
 * refused whole with an error reply otherwise), and the totals are written once, at the end.
 */
export const PUBLISH_BACKLOG = defineScript<number[]>()({
  name: 'PUBLISH_BACKLOG',
  shebang: '#!lua',
  keys: ['active', 'stats', 'totals', 'oldestDirty', 'oldestUnfolded', 'next'],
  args: ['channel'],
  body: `${SHARD_CHECKS}local function optInt(v) return v == '' or int(v) end
local function count(v) return int(v) and string.sub(v, 1, 1) ~= '-' end
-- Read phase: every argument and every stored number checked, every key's type checked; nothing written yet.
local totals = shardTotals()
if not totals then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.totals .. ' holds a non-integer total') end
local seen = {} -- store -> {mark or false, rows, entries} as left by earlier stores of this call
local writes = {}
local out = {}
local epochs = {}
for i = AR, #ARGV, 8 do
  local store = ARGV[i]
  if ARGV[i + 7] ~= '' then
    table.insert(epochs, store)
    table.insert(epochs, ARGV[i + 7])
  end
  if not (count(ARGV[i + 1]) and count(ARGV[i + 2]) and optInt(ARGV[i + 3]) and optInt(ARGV[i + 4]) and optInt(ARGV[i + 6] or '')) then
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
    local unchanged = ARGV[i + 5] ~= '' and tonumber(mark) == tonumber(ARGV[i + 5])
    local retire = unchanged and rows == 0 and ARGV[i + 4] == ''
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
      table.insert(writes, {store, false, rows, entries, ARGV[i + 3], ARGV[i + 4], ARGV[i + 6], unchanged})
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
    redis.call('ZREM', K.next, store)
  else
    redis.call('HSET', K.stats, store .. '|r', string.format('%d', w[3]), store .. '|e', string.format('%d', w[4]))
    if w[5] == '' then redis.call('ZREM', K.oldestDirty, store) else redis.call('ZADD', K.oldestDirty, w[5], store) end
    if w[6] ~= '' then redis.call('ZADD', K.oldestUnfolded, w[6], store) elseif w[8] then redis.call('ZREM', K.oldestUnfolded, store) end
    if w[7] ~= '' then
      if w[8] then redis.call('ZADD', K.next, w[7], store) else redis.call('ZADD', K.next, 'LT', w[7], store) end
    end
  end
end
if #writes > 0 then
  -- Gauges: never below 0, even from totals an older version left inconsistent.
  redis.call('HSET', K.totals, 'rows', string.format('%d', math.max(0, totals[1])), 'entries', string.format('%d', math.max(0, totals[2])))
end
if #epochs > 0 and A.channel ~= '' then redis.call('PUBLISH', A.channel, cjson.encode(epochs)) end
return out
`,
});

/**
 * REGISTER a store in its work-set shard after an apply: give it a new mark (which keeps a sealer tick that read the
 * old one from retiring it or postponing its visit) and move its next visit time to `visitAt` when that is earlier
 * (or when it has none); with `unfoldedSince` (the apply's time; '' = none), move its oldest unfolded time there when
 * that is earlier (or when it has none), so the gauges count the open bucket's counts from their apply on, not from
 * the sealer's next visit. KEYS: active, next, marks, oldestUnfolded. ARGV: store, visitAt, unfoldedSince. All in
 * one step: a sealer never sees the new mark without the visit time, nor a store in the set without one. The mark is
 * the shard's counter `marks` (INCR; started at 2^32, above any mark the earlier `ZINCRBY` by 1 gave), so a store's
 * mark never takes a value it had before, even after it was retired and registered again: a caller holding a mark it
 * read (a tick's retire, a move's LEAVE_SHARD) never mistakes a later registration for the one it read.
 */
export const REGISTER = defineScript<number>()({
  name: 'REGISTER',
  shebang: '#!lua',
  keys: ['active', 'next', 'marks', 'oldestUnfolded'],
  args: ['store', 'visitAt', 'unfoldedSince'],
  body: `
-- Read phase: the arguments, the keys' types and the counter; nothing written yet.
for _, v in ipairs({A.visitAt, A.unfoldedSince ~= '' and A.unfoldedSince or '0'}) do
  if not (string.match(v, '^-?%d+$') and #v < 16) then return redis.error_reply('TALLY_ERR_ARGUMENT ' .. v .. ' is not an integer') end
end
for _, key in ipairs({K.active, K.next, K.oldestUnfolded}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'zset' then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a zset') end
end
local counter = redis.call('GET', K.marks)
if counter and not (string.match(counter, '^%d+$') and #counter < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.marks .. ' is not a mark counter')
end
-- Write phase.
if not counter then redis.call('SET', K.marks, '4294967296') end
redis.call('ZADD', K.active, redis.call('INCR', K.marks), A.store)
redis.call('ZADD', K.next, 'LT', A.visitAt, A.store)
if A.unfoldedSince ~= '' then redis.call('ZADD', K.oldestUnfolded, 'LT', A.unfoldedSince, A.store) end
return 1
`,
});

/**
 * The stores of a work-set shard DUE for a sealer visit at `now` (next visit time <= now), oldest first, at most
 * `limit`, with their marks: a flat list store, mark, ... KEYS: active, next. ARGV: now, limit.
 * Stores of the active set without a next visit time (a set written before visit times existed) are given `now`
 * first, and a visit time without an active store is dropped: the two sets hold the same stores afterwards.
 */
export const DUE_STORES = defineScript<Array<string | null>>()({
  name: 'DUE_STORES',
  shebang: '#!lua',
  keys: ['active', 'next'],
  args: ['now', 'limit'],
  body: `
-- Read phase: the arguments, both keys' types and the stores to repair; nothing written yet.
for _, v in ipairs({A.now, A.limit}) do
  if not (string.match(v, '^%d+$') and #v < 16) then return redis.error_reply('TALLY_ERR_ARGUMENT ' .. v .. ' is not a non-negative integer') end
end
for _, key in ipairs({K.active, K.next}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'zset' then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a zset') end
end
local missing, orphans = {}, {}
if redis.call('ZCARD', K.active) ~= redis.call('ZCARD', K.next) then
  for _, store in ipairs(redis.call('ZRANGE', K.active, 0, -1)) do
    if not redis.call('ZSCORE', K.next, store) then table.insert(missing, store) end
  end
  for _, store in ipairs(redis.call('ZRANGE', K.next, 0, -1)) do
    if not redis.call('ZSCORE', K.active, store) then table.insert(orphans, store) end
  end
end
-- Write phase (only when the sets differ).
for _, store in ipairs(missing) do redis.call('ZADD', K.next, A.now, store) end
for _, store in ipairs(orphans) do redis.call('ZREM', K.next, store) end
local stores = redis.call('ZRANGE', K.next, '-inf', A.now, 'BYSCORE', 'LIMIT', 0, tonumber(A.limit))
local out = {}
for c = 1, #stores, 1000 do
  local marks = redis.call('ZMSCORE', K.active, unpack(stores, c, math.min(c + 999, #stores)))
  for k = 1, #marks do
    table.insert(out, stores[c + k - 1])
    table.insert(out, marks[k])
  end
end
return out
`,
});

/**
 * A store LEAVEs a work-set shard that is not its own (QUEUE_SHARDS changed), once REGISTER put it in its own: it is
 * removed from the shard, with its stats, oldest times and next visit time (the shard's totals less its stats), when
 * its mark is still `mark` (the mark the caller read before that REGISTER). A store whose mark moved (an apply of a
 * process still on the old QUEUE_SHARDS registered it again meanwhile) stays, and is moved again later. With `drop`
 * ('1': a shard past QUEUE_SHARDS, which no sealer ticks), once no store is left in the shard its other keys (stats,
 * totals, oldest times, visit times) are deleted too: the gauges never read that shard's stale figures. KEYS: active,
 * stats, totals, oldestDirty, oldestUnfolded, next. ARGV: drop, then per store: store, mark. Returns {stores left in
 * the shard, then per store 1 removed or 0 not (not there, or its mark moved)}. Every check before the first write,
 * as PUBLISH_BACKLOG.
 */
export const LEAVE_SHARD = defineScript<number[]>()({
  name: 'LEAVE_SHARD',
  shebang: '#!lua',
  keys: ['active', 'stats', 'totals', 'oldestDirty', 'oldestUnfolded', 'next'],
  args: ['drop'],
  body: `${SHARD_CHECKS}-- Read phase: every key's type, the totals and the stats of the stores removed checked; nothing written yet.
local totals = shardTotals()
if not totals then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.totals .. ' holds a non-integer total') end
local out, gone, removed = {0}, {}, {}
for i = AR, #ARGV, 2 do
  local store, mark = ARGV[i], tonumber(ARGV[i + 1])
  local held = redis.call('ZSCORE', K.active, store)
  if gone[store] or not held or not mark or tonumber(held) ~= mark then
    table.insert(out, 0)
  else
    local old = redis.call('HMGET', K.stats, store .. '|r', store .. '|e')
    for k = 1, 2 do
      if old[k] and not int(old[k]) then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.stats .. ' ' .. store .. ' holds a non-integer') end
    end
    totals[1] = totals[1] - (tonumber(old[1]) or 0)
    totals[2] = totals[2] - (tonumber(old[2]) or 0)
    gone[store] = true
    table.insert(removed, store)
    table.insert(out, 1)
  end
end
-- Write phase: commands that cannot fail on the keys checked above.
for _, store in ipairs(removed) do
  redis.call('ZREM', K.active, store)
  redis.call('HDEL', K.stats, store .. '|r', store .. '|e')
  redis.call('ZREM', K.oldestDirty, store)
  redis.call('ZREM', K.oldestUnfolded, store)
  redis.call('ZREM', K.next, store)
end
local left = redis.call('ZCARD', K.active)
if left == 0 and A.drop == '1' then
  redis.call('DEL', K.stats, K.totals, K.oldestDirty, K.oldestUnfolded, K.next)
elseif #removed > 0 then
  -- Gauges: never below 0, even from totals an older version left inconsistent.
  redis.call('HSET', K.totals, 'rows', string.format('%d', math.max(0, totals[1])), 'entries', string.format('%d', math.max(0, totals[2])))
end
out[1] = left
return out
`,
});
