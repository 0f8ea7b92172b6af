import { defineScript } from './script-table';

/**
 * Lua scripts: each runs atomically on one store's keys (one hash tag, so one slot of a Redis Cluster). Every key a
 * script touches is declared in KEYS (named, or in a per-row tail): no script builds a key name. Keys that depend
 * on the open bucket's seq (its row set and bucket hashes) are built by the caller from the seq it expects; the
 * script reads the epoch first and, when it differs, answers `stale` with the current one before touching anything
 * else, and the caller retries (BucketStore). TTLs come in as named arguments. Numbers that can exceed 2^31 are
 * formatted with %d, never tostring (which would print 1.7e+12).
 *
 * The rule of every script (README "How counts move exactly once"): all reads and checks first, then the
 * writes, and no write can fail. Redis does not roll a script back, so an error after the first write would
 * leave half a change behind. One exception, APPLY's counts, keeps the rule's outcome by another way: their
 * HINCRBYs are all taken back before any error reply (see APPLY). Hence:
 * - every script starts with a `#!lua` shebang: a script that may write is refused whole (OOM error, nothing
 *   run) while Redis is over maxmemory under `noeviction`, and is never stopped by OOM once it runs;
 *   read-only scripts say `flags=no-writes`;
 * - the read phase touches every key the write phase writes with a command that fails on a wrong type (HMGET,
 *   HLEN, LLEN, ZSCORE, GET, or TYPE), and checks every number it will write;
 * - a count is kept in base-10^15 limbs (see LIMBS), never as one 64-bit field: HINCRBY adds to the low limb only
 *   while no carry is due, and any other sum is added up exactly in Lua doubles, a sum over 38 digits refused with
 *   an error reply that leaves nothing written. A limb is never stored as 0 (absent means 0), so a HINCRBY that
 *   finds 0 created its field and is taken back by deleting it.
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
-- The store's running count of outbox entries (a gauge, not a count: a plain integer, 0 when absent or below 0 as
-- an older version could leave it), or nil when the field holds anything else. Checks the hash's type, so a later
-- HSET/HDEL on it cannot fail.
local function readEntries(key)
  expectType(key, 'hash')
  local v = redis.call('HGET', key, 'entries')
  if not v then return 0 end
  if not (string.match(v, '^-?%d+$') and #v < 16) then return nil end
  return math.max(0, tonumber(v))
end
-- Whether a bucket field (day|metric, limbs day|metric|k) or outbox field (seq|day|metric, limbs seq|...|k) is a
-- count rather than one of its high limbs: a count has that many bars, a limb one more.
local function isEntry(field, bars)
  local _, n = string.gsub(field, '|', '')
  return n == bars
end
`;

/**
 * Tombstones (docs/DESIGN.md "Privacy"), checked before anything else through the declared keys `tombstone` (the
 * store was deleted: every writing script is a no-op, or for fold only deletes, so an in-flight batch or flush
 * re-creates nothing) and, in APPLY and SKETCH_ADD, `erased` (rows of erased visitors, a zset pk -> until, ms: their
 * counts and sketch members are dropped until then; ERASE_ROW prunes the entries whose time has passed). A hash
 * pk -> until, as versions before the zset wrote it, is read alike until it expires or the next erasure makes it a
 * zset. erasedType() reads the key's type ('none': no row erased) and must come before rowErased(); any other type
 * fails rowErased's read (WRONGTYPE), in the read phase.
 */
export const TOMBSTONES = `
local function storeDeleted() return redis.call('EXISTS', K.tombstone) == 1 end
local erasedAs
local function erasedType()
  erasedAs = redis.call('TYPE', K.erased)['ok']
  return erasedAs
end
local function rowErased(pk, now)
  local u
  if erasedAs == 'hash' then u = redis.call('HGET', K.erased, pk) else u = redis.call('ZSCORE', K.erased, pk) end
  u = tonumber(u or '')
  return u ~= nil and u > now
end
`;

/**
 * Flush-policy arithmetic shared by fold and ack. Policy arguments: kind ('bucket'|'every'|'idle'), a, b
 * (every: a = interval ms, b = the store's phase in it, 0 <= b < a: due at the next instant after now that is b past
 * a multiple of a; idle: a = idle ms, b = max age ms). Keeps an existing earlier `every` due time.
 */
const DUE = `
local function schedule(dirtyKey, dueKey, pk, now, kind, a, b)
  local due
  if kind == 'bucket' then
    due = now
  elseif kind == 'every' then
    if redis.call('ZSCORE', dueKey, pk) then return end
    due = (math.floor((now - b) / a) + 1) * a + b
  else
    local first = tonumber(redis.call('ZSCORE', dirtyKey, pk)) or now
    due = math.min(now + a, first + b)
  end
  redis.call('ZADD', dueKey, string.format('%d', due), pk)
end
`;

/**
 * The rows due at `now` (at most `limit`), with the time of their oldest unwritten count ('' when not dirty): a
 * flat list pk, firstDirty, ... A row's score in dueKey is its flush time, or for an idle row an alarm at or before
 * it: a fold that moves an idle row's flush time later keeps the new time in laterKey (a hash) and leaves the zset
 * alone (a listpack zset's ZADD rewrites it whole). A fired alarm whose row's time in laterKey is still ahead is not
 * due: it comes back in `rearm` (time, pk, ...) and `rearmPks`, for rearmDue after the caller's read phase. Reads
 * only: dueKey, dirtyKey and laterKey must have been type-checked.
 * leaseDue, in the write phase, leases the rows a due list hands out (the sealer enqueues their flush jobs): their
 * alarms move to `now + leaseMs`, so the visits until then skip them while their jobs are pending. The writer's
 * ACK_OUTBOX ends a lease (it reschedules the row, or removes it when nothing is left); a row whose job was lost (a
 * crash before the enqueue, a failed job purged) comes due again when its lease ends. leaseMs 0: no lease.
 */
export const DUE_LIST = `
local function dueList(dueKey, dirtyKey, laterKey, now, limit)
  local pks = redis.call('ZRANGE', dueKey, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  local out, rearm, rearmPks = {}, {}, {}
  local nowN = tonumber(now)
  for c = 1, #pks, 1000 do
    local chunk = {unpack(pks, c, math.min(c + 999, #pks))}
    local later = redis.call('HMGET', laterKey, unpack(chunk))
    local due = {}
    for k = 1, #chunk do
      local t = later[k] and tonumber(later[k])
      if t and t > nowN then
        table.insert(rearm, string.format('%d', t))
        table.insert(rearm, chunk[k])
        table.insert(rearmPks, chunk[k])
      else
        table.insert(due, chunk[k])
      end
    end
    if #due > 0 then
      local scores = redis.call('ZMSCORE', dirtyKey, unpack(due))
      for k = 1, #scores do
        table.insert(out, due[k])
        table.insert(out, scores[k] or '')
      end
    end
  end
  return out, rearm, rearmPks
end
-- Moves fired alarms to their rows' later flush times (dueList's rearm) and drops those times from laterKey.
local function rearmDue(dueKey, laterKey, rearm, rearmPks)
  for c = 1, #rearm, 1000 do redis.call('ZADD', dueKey, unpack(rearm, c, math.min(c + 999, #rearm))) end
  for c = 1, #rearmPks, 1000 do redis.call('HDEL', laterKey, unpack(rearmPks, c, math.min(c + 999, #rearmPks))) end
end
local function leaseDue(dueKey, out, now, leaseMs)
  if not (leaseMs and leaseMs > 0) then return end
  local until_ = string.format('%d', now + leaseMs)
  local z = {}
  for k = 1, #out, 2 do
    z[#z + 1] = until_
    z[#z + 1] = out[k]
  end
  for c = 1, #z, 2000 do redis.call('ZADD', dueKey, unpack(z, c, math.min(c + 1999, #z))) end
end
`;

/** A stale reply: the seq the caller built its keys from is not the store's epoch (or '' when it has none). */
export type Stale = [0, string];

/**
 * APPLY one events batch into the open bucket, at most once per batch id.
 * KEYS: epoch, dedupe (the batch id's record), rows (the row set of bucket `epoch`), tombstone, erased, then per row its bucket hash
 * of bucket `epoch`, then the ranking zsets the ranked rows add to. ARGV: now, dedupeTtlSeconds, epoch (the open
 * bucket's seq the keys are built for; `now` when the store has no epoch yet), rowCount, rankTtlSeconds, then per
 * row: pk, fieldCount, (field, delta)*, each delta a non-negative decimal string; then per ranking zset (in the
 * order of its key): memberCount n, the members' row indexes (1-based, in the rows' order, joined by ','), the n
 * members, then their n deltas (each the sum of its row's deltas to that ranking, a double).
 * A count `f` is held in limbs: field `f` (units mod 10^15), `f|1` (the next 15 digits) and `f|2` (the rest),
 * each present only when non-zero. A delta of 1 to 15 digits is added to `f` by HINCRBY (one command per field, no
 * read first) and kept when `f` held a count and the sum stays under 10^15; every other field is read (once, however
 * many times the batch repeats it) and its deltas added up in limbs, then written after all checks. A refused batch
 * takes its HINCRBYs back before the error reply (a HINCRBY that found 0 created the field, and the field is
 * deleted), so nothing of it stays.
 * Ranked rows add their unkeyed deltas to the daily ranking zsets of their entity in the same step (top lists),
 * so a top list ranks every bucket, the open one included, and a batch is ranked exactly once; a score is the
 * delta as a double, which orders but need not be exact. The caller sums each member's deltas per ranking
 * (BucketStore.applyRows); the script adds them to the members' scores (ZMSCORE, which checks the zset's type, then
 * ZADD and EXPIRE in the write phase) and skips a member whose row is left out (the row indexes are read only when
 * the store has erased rows). A malformed ranking argument (a count, row index or delta out of range, or arguments
 * left over) refuses the call whole (`TALLY_ERR_ARGUMENT`).
 * Returns {1, seq} when applied, {0, 0} when the batch id was already applied (a redelivery), {-1, epoch or ''}
 * (nothing written) when the keys are not the open bucket's, {2, 0} (nothing written) when the store is deleted
 * (its tombstone). Rows of erased visitors (`erased`) are left out. Refuses the whole batch, writing nothing, with an
 * error reply `TALLY_ERR_SUM_OVERFLOW` when a count would exceed 38 digits and `TALLY_ERR_NOT_A_COUNT` when a
 * delta or a stored count is not a non-negative integer.
 * The epoch is read inside the script, so once the sealer advanced it the sealed bucket can never change.
 */
export const APPLY = defineScript<[1, string] | [0, 0] | [-1, string] | [2, 0]>()({
  name: 'APPLY',
  shebang: '#!lua',
  keys: ['epoch', 'dedupe', 'rows', 'tombstone', 'erased'],
  args: ['now', 'dedupeTtlSeconds', 'epoch', 'rowCount', 'rankTtlSeconds'],
  body: `${LIMBS}${TOMBSTONES}
if storeDeleted() then return {2, 0} end
local erasedRows = erasedType() ~= 'none'
if redis.call('EXISTS', K.dedupe) == 1 then return {0, 0} end
if not string.match(A.dedupeTtlSeconds, '^[1-9]%d*$') then return redis.error_reply('TALLY_ERR_ARGUMENT dedupe TTL must be at least 1 s') end
local epoch = redis.call('GET', K.epoch)
local newEpoch = not epoch
if newEpoch then
  if A.epoch ~= A.now then return {-1, ''} end
  epoch = A.now
elseif epoch ~= A.epoch then
  return {-1, epoch}
end
expectType(K.rows, 'set')
-- The rows' spans in ARGV; rows of erased visitors are left out (their counts dropped, not ranked).
local rowCount = tonumber(A.rowCount)
local pks, spans = {}, {}
local i = AR
for r = 1, rowCount do
  local pk, n = ARGV[i], tonumber(ARGV[i + 1])
  if not (erasedRows and rowErased(pk, tonumber(A.now))) then
    spans[r] = {i + 2, n, pk}
    pks[#pks + 1] = pk
  end
  i = i + 2 + 2 * n
end
-- Rankings, per ranking zset: its member count n, the members' row indexes (one argument, read only when rows may be
-- left out), the n members, then their n summed deltas. A member whose row is left out (an erased visitor) is
-- dropped. Each zset's ZMSCORE checks its type; the new scores are written below.
local ranks = {}
for z = KR + rowCount, #KEYS do
  local n = tonumber(ARGV[i])
  if not (n and n >= 0 and n % 1 == 0 and i + 1 + 2 * n <= #ARGV) then
    return redis.error_reply('TALLY_ERR_ARGUMENT ranking ' .. KEYS[z] .. ': no member count, or fewer arguments')
  end
  -- Its members are members[m .. m + n - 1] and their deltas deltas[d .. d + n - 1]: ARGV, or copies of those kept.
  local g = {key = KEYS[z], members = ARGV, m = i + 2, deltas = ARGV, d = i + 2 + n, n = n}
  if erasedRows then
    local members, deltas, j = {}, {}, 0
    for x in string.gmatch(ARGV[i + 1], '[^,]+') do
      local r = tonumber(x)
      if not (r and r >= 1 and r <= rowCount and j < n) then
        return redis.error_reply('TALLY_ERR_ARGUMENT ranking ' .. KEYS[z] .. ': a row index out of range, or too many')
      end
      if spans[r] then members[#members + 1], deltas[#deltas + 1] = ARGV[g.m + j], ARGV[g.d + j] end
      j = j + 1
    end
    if j ~= n then return redis.error_reply('TALLY_ERR_ARGUMENT ranking ' .. KEYS[z] .. ': too few row indexes') end
    g.members, g.m, g.deltas, g.d, g.n = members, 1, deltas, 1, #members
  end
  i = i + 2 + 2 * n
  if g.n > 0 then ranks[#ranks + 1] = g end
end
if i ~= #ARGV + 1 then return redis.error_reply('TALLY_ERR_ARGUMENT the rankings do not end the arguments') end
for _, g in ipairs(ranks) do
  g.scores = {}
  for c = 0, g.n - 1, 1000 do
    local e = math.min(c + 999, g.n - 1)
    local cur = redis.call('ZMSCORE', g.key, unpack(g.members, g.m + c, g.m + e))
    for j = c, e do
      local d = tonumber(g.deltas[g.d + j])
      if not (d and d >= 0 and d < math.huge) then
        return redis.error_reply('TALLY_ERR_ARGUMENT ranking ' .. g.key .. ': a delta is not a non-negative number')
      end
      g.scores[2 * j + 1], g.scores[2 * j + 2] = (cur[j - c + 1] or 0) + d, g.members[g.m + j]
    end
  end
end
-- Counts. Fast path: a delta of 1 to 15 digits (no leading zero) goes straight into the low limb with HINCRBY, and
-- stays when the stored low limb was a count and no carry is due (the sum under 10^15); otherwise that one HINCRBY is
-- taken back and the field takes the full path (marked in isSlow). On any error reply below, every HINCRBY kept is
-- taken back (a field the batch created is deleted), so a refused batch leaves nothing behind.
local slow, isSlow = {}, {}
-- Takes back the HINCRBYs kept, in the rows' order up to (not including) ARGV index \`stop\`: a field back at 0 was
-- created by its HINCRBY (no limb is stored as 0) and is deleted.
local function undo(stop)
  for r = 1, rowCount do
    local span = spans[r]
    if span then
      local key = KEYS[KR + r - 1]
      for f = span[1], span[1] + 2 * span[2] - 2, 2 do
        if f == stop then return end
        if not isSlow[f] and redis.call('HINCRBY', key, ARGV[f], '-' .. ARGV[f + 1]) == 0 then redis.call('HDEL', key, ARGV[f]) end
      end
    end
  end
end
for r = 1, rowCount do
  local span = spans[r]
  if span then
    local key = KEYS[KR + r - 1]
    for f = span[1], span[1] + 2 * span[2] - 2, 2 do
      local d = ARGV[f + 1]
      local v = #d <= 15 and string.match(d, '^[1-9]%d*$') and redis.pcall('HINCRBY', key, ARGV[f], d)
      if type(v) ~= 'number' or v >= BASE or v < d + 0 then
        if type(v) == 'number' then
          redis.call('HINCRBY', key, ARGV[f], '-' .. d)
        elseif v and string.find(v.err, 'WRONGTYPE', 1, true) then
          undo(f)
          return v
        end
        slow[#slow + 1], isSlow[f] = {key, f, span[3]}, true
      end
    end
  end
end
-- Full path: the field's three limbs read, the delta added exactly, carried and checked; written below. A field the
-- batch repeats (a pk twice, or a field twice in a row) is read once and each of its deltas added to that sum.
local sums, byField = {}, {}
for _, s in ipairs(slow) do
  local key, f, pk = s[1], s[2], s[3]
  local name = ARGV[f]
  local fields = byField[key]
  if not fields then
    fields = {}
    byField[key] = fields
  end
  local sum = fields[name]
  if not sum then
    local limbs = {name, name .. '|1', name .. '|2'}
    local cur = redis.pcall('HMGET', key, unpack(limbs))
    if cur.err then undo() return cur end
    local ok = true
    sum = {key = key, limbs = limbs, cur = cur, acc = {0, 0, 0}}
    for k = 1, 3 do ok = ok and (not cur[k] or addDecimal(sum.acc, cur[k], k)) end
    if not ok then undo() return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. pk .. ' ' .. name .. ': a stored count is not a non-negative integer') end
    fields[name] = sum
    sums[#sums + 1] = sum
  end
  if not addDecimal(sum.acc, ARGV[f + 1], 1) then undo() return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. pk .. ' ' .. name .. ': the delta is not a non-negative integer') end
  if not normalize(sum.acc) then undo() return redis.error_reply('TALLY_ERR_SUM_OVERFLOW ' .. pk .. ' ' .. name .. ': the bucket sum would exceed 38 digits') end
end
local writes = {}
for _, sum in ipairs(sums) do
  local set, del = {}, {}
  for k = 1, 3 do
    if sum.acc[k] ~= 0 then
      set[#set + 1] = sum.limbs[k]
      set[#set + 1] = string.format('%d', sum.acc[k])
    elseif sum.cur[k] then
      del[#del + 1] = sum.limbs[k]
    end
  end
  writes[#writes + 1] = {sum.key, set, del}
end
-- Write phase: commands that cannot fail on the keys checked above.
redis.call('SET', K.dedupe, '1', 'EX', A.dedupeTtlSeconds)
if newEpoch then redis.call('SET', K.epoch, epoch) end
for _, w in ipairs(writes) do
  if #w[2] > 0 then redis.call('HSET', w[1], unpack(w[2])) end
  if #w[3] > 0 then redis.call('HDEL', w[1], unpack(w[3])) end
end
for c = 1, #pks, 2000 do redis.call('SADD', K.rows, unpack(pks, c, math.min(c + 1999, #pks))) end
for _, g in ipairs(ranks) do
  for c = 1, #g.scores, 2000 do redis.call('ZADD', g.key, unpack(g.scores, c, math.min(c + 1999, #g.scores))) end
  redis.call('EXPIRE', g.key, A.rankTtlSeconds)
end
return {1, epoch}
`,
});

/**
 * SEAL the open bucket when it has data and has been open at least minAgeMs: advance the epoch and append the
 * sealed seq to the sealed list. KEYS: epoch, sealed, rows (the row set of bucket `epoch`). ARGV: now, minAgeMs,
 * epoch (the seq the rows key is built for). Returns {1, sealed seq or '', the epoch after the call or ''}, or a
 * stale reply {0, epoch}.
 */
export const SEAL = defineScript<[1, string, string] | Stale>()({
  name: 'SEAL',
  shebang: '#!lua',
  keys: ['epoch', 'sealed', 'rows', 'tombstone'],
  args: ['now', 'minAgeMs', 'epoch'],
  body: `${TOMBSTONES}
if storeDeleted() then return {1, '', ''} end
local epoch = redis.call('GET', K.epoch)
if not epoch then return {1, '', ''} end
if epoch ~= A.epoch then return {0, epoch} end
if redis.call('EXISTS', K.rows) == 0 then return {1, '', epoch} end
local now = tonumber(A.now)
if now - tonumber(epoch) < tonumber(A.minAgeMs) then return {1, '', epoch} end
redis.call('LLEN', K.sealed) -- fails on a wrong type before anything is written
local nextEpoch = string.format('%d', math.max(tonumber(epoch) + 1, now))
redis.call('SET', K.epoch, nextEpoch)
redis.call('RPUSH', K.sealed, epoch)
return {1, epoch, nextEpoch}
`,
});

/**
 * FOLD rows of sealed bucket `seq` into their outboxes. Idempotent per row: a row whose bucket hash is gone
 * was folded already. KEYS: rows (the bucket's row set), dirty, due, counts, sealed, folded, epoch, openRows (the
 * row set of bucket `openEpoch`), tombstone, dueLater, then per row its bucket hash and its outbox. ARGV: seq, now,
 * openEpoch, report ('1' = report what is left), dueLimit, leaseMs, rowCount, then per row: pk, policyKind, a, b.
 * (The rankings of top lists were updated by APPLY.)
 * The outbox fields `<seq>|<bucket field>` are new (only this fold of this bucket writes them), so the copy is
 * an HSET of the bucket's values; an existing one means the layout was broken and the call is refused whole.
 * The store's running count of outbox entries (`entries` in the counts hash) grows by the counts copied (not their
 * limbs). When `seq` is the oldest sealed bucket and no row of it is left, the fold is finished here (as FINISH_FOLD).
 * Each folded row's flush time is set by its policy (as ACK_OUTBOX's schedule); an idle row whose alarm in `due` is
 * already set at or before its new time keeps that alarm and gets the new time in `dueLater` (see DUE_LIST): a
 * re-touched idle row costs no zset rewrite.
 * Returns {rows moved, 1 when finished here else 0} and, with report, what is left as VISIT reports it: dirty
 * rows, oldest dirty time or '', outbox entries, oldest sealed seq or '', oldest unfolded seq or '' (the open
 * bucket counts as unfolded when it has data, or when the epoch is no longer `openEpoch`), the due list (its rows
 * leased for leaseMs, see DUE_LIST, when this call finished the bucket), the earliest due time of any row after that
 * or ''.
 */
export const FOLD = defineScript<[number, number] | [number, number, number, string, string, string, string, string[], string]>()({
  name: 'FOLD',
  shebang: '#!lua',
  keys: ['rows', 'dirty', 'due', 'counts', 'sealed', 'folded', 'epoch', 'openRows', 'tombstone', 'dueLater'],
  args: ['seq', 'now', 'openEpoch', 'report', 'dueLimit', 'leaseMs', 'rowCount'],
  body: `${LIMBS}${DUE_LIST}${TOMBSTONES}
if storeDeleted() then
  -- A deleted store: only deletes (its sealed buckets are dropped), and reports nothing left.
  redis.call('DEL', K.rows, K.sealed)
  if A.report ~= '1' then return {0, 1} end
  return {0, 1, 0, '', '0', '', '', {}, ''}
end
local seq = A.seq
local now = tonumber(A.now)
local n = tonumber(A.rowCount)
expectType(K.rows, 'set')
expectType(K.dirty, 'zset')
expectType(K.due, 'zset')
expectType(K.dueLater, 'hash')
local entries = readEntries(K.counts)
if not entries then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.counts .. ' entries is not an integer') end
local head = redis.call('LINDEX', K.sealed, 0) or ''
local epoch = redis.call('GET', K.epoch)
local openHasData = epoch ~= false and (epoch ~= A.openEpoch or redis.call('EXISTS', K.openRows) == 1)
-- Read phase: every row's bucket and its outbox checked; nothing written yet.
local rows = {}
local movedPks = {}
for r = 0, n - 1 do
  local i = AR + 4 * r
  local pk = ARGV[i]
  local key = KEYS[KR + 2 * r]
  local data = redis.call('HGETALL', key)
  local row = {pk = pk, key = key, data = data, i = i}
  if #data > 0 then
    local outbox = KEYS[KR + 2 * r + 1]
    local names = {}
    for j = 1, #data, 2 do
      if not string.match(data[j + 1], '^%d+$') then
        return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. key .. ' ' .. data[j] .. ' is not a non-negative integer')
      end
      table.insert(names, seq .. '|' .. data[j])
    end
    for c = 1, #names, 1000 do
      -- HMGET fails on a wrong type: the outbox's check before the HSET below.
      local cur = redis.call('HMGET', outbox, unpack(names, c, math.min(c + 999, #names)))
      for k = 1, #cur do
        if cur[k] then return redis.error_reply('TALLY_ERR_FOLD_CONFLICT ' .. outbox .. ' already has ' .. names[c + k - 1]) end
      end
    end
    row.outbox = outbox
    row.names = names
    table.insert(movedPks, pk)
  end
  table.insert(rows, row)
end
-- The moved rows' current dirty and due times, for their flush schedule (one call each, not one per row).
local firstDirty = {}
local dueAt = {}
for c = 1, #movedPks, 1000 do
  local chunk = {unpack(movedPks, c, math.min(c + 999, #movedPks))}
  local d = redis.call('ZMSCORE', K.dirty, unpack(chunk))
  local u = redis.call('ZMSCORE', K.due, unpack(chunk))
  for k = 1, #chunk do
    firstDirty[chunk[k]] = d[k]
    dueAt[chunk[k]] = u[k]
  end
end
-- Write phase.
local moved = 0
local newDirty = {}
local newDue = {}
local newLater = {}
local dropLater = {}
local folded = {}
local nowText = string.format('%d', now)
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
    table.insert(folded, row.key)
    for j = 1, #data, 2 do
      if isEntry(data[j], 1) then entries = entries + 1 end
    end
    -- As ZADD dirty NX now, then schedule() (see DUE), for all rows at once.
    local first = tonumber(firstDirty[pk])
    if not first then
      first = now
      table.insert(newDirty, nowText)
      table.insert(newDirty, pk)
    end
    local kind, a, b = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    local due
    if kind == 'bucket' then
      due = now
    elseif kind == 'every' then
      if not dueAt[pk] then due = (math.floor((now - b) / a) + 1) * a + b end
    else
      due = math.min(now + a, first + b)
    end
    local alarm = tonumber(dueAt[pk])
    if due and kind == 'idle' and alarm and alarm < due then
      -- An idle row's flush time moved later (it was re-touched): its alarm stays and fires at the old time, when
      -- DUE_LIST re-arms it to this one. A listpack zset's ZADD rewrites it whole; a hash field of the same size is
      -- replaced in place.
      table.insert(newLater, pk)
      table.insert(newLater, string.format('%d', due))
    elseif due then
      -- A due time left as it is (an idle row at its max age) is not rewritten.
      if due ~= alarm then
        table.insert(newDue, string.format('%d', due))
        table.insert(newDue, pk)
      end
      -- dueLater only holds rows of the due zset (ack and erase drop both): a row without an alarm has no entry.
      if alarm then table.insert(dropLater, pk) end
    end
    moved = moved + 1
  end
end
for c = 1, #folded, 1000 do redis.call('DEL', unpack(folded, c, math.min(c + 999, #folded))) end
for c = 1, #newDirty, 1000 do redis.call('ZADD', K.dirty, unpack(newDirty, c, math.min(c + 999, #newDirty))) end
for c = 1, #newDue, 1000 do redis.call('ZADD', K.due, unpack(newDue, c, math.min(c + 999, #newDue))) end
for c = 1, #newLater, 1000 do redis.call('HSET', K.dueLater, unpack(newLater, c, math.min(c + 999, #newLater))) end
for c = 1, #dropLater, 1000 do redis.call('HDEL', K.dueLater, unpack(dropLater, c, math.min(c + 999, #dropLater))) end
local pkList = {}
for r = 0, n - 1 do pkList[r + 1] = ARGV[AR + 4 * r] end
for c = 1, #pkList, 1000 do redis.call('SREM', K.rows, unpack(pkList, c, math.min(c + 999, #pkList))) end
if moved > 0 then redis.call('HSET', K.counts, 'entries', string.format('%d', entries)) end
local finished = 0
if head == seq and redis.call('SCARD', K.rows) == 0 then
  redis.call('LPOP', K.sealed)
  redis.call('SET', K.folded, seq)
  finished = 1
  head = redis.call('LINDEX', K.sealed, 0) or ''
end
if A.report ~= '1' then return {moved, finished} end
-- What is left (reads only, of keys checked above).
local first = redis.call('ZRANGE', K.dirty, 0, 0, 'WITHSCORES')
local unfolded = head
if unfolded == '' and openHasData then unfolded = epoch end
local nextDue = redis.call('ZRANGE', K.due, 0, 0, 'WITHSCORES')[2] or ''
local dueRows = {}
if nextDue ~= '' and tonumber(nextDue) <= now then
  local rearm, rearmPks
  dueRows, rearm, rearmPks = dueList(K.due, K.dirty, K.dueLater, A.now, tonumber(A.dueLimit))
  rearmDue(K.due, K.dueLater, rearm, rearmPks)
  -- Leased only when this call finished the bucket: the caller drops an unfinished fold's report (and folds the
  -- store's sealed buckets again, then takes the due rows from a VISIT, which leases them).
  if finished == 1 then leaseDue(K.due, dueRows, now, tonumber(A.leaseMs)) end
  if #rearmPks > 0 or #dueRows > 0 then nextDue = redis.call('ZRANGE', K.due, 0, 0, 'WITHSCORES')[2] or '' end
end
return {moved, finished, redis.call('ZCARD', K.dirty), first[2] or '', string.format('%d', entries), head, unfolded, dueRows, nextDue}
`,
});

/**
 * FINISH the fold of `seq`: only when it is the oldest sealed bucket and all its rows are folded, pop it and
 * advance foldedThrough. KEYS: sealed, rows (the row set of bucket `seq`), folded. ARGV: seq. Returns 1 done, 0 not
 * the head (someone else finished it), -1 rows remain.
 */
export const FINISH_FOLD = defineScript<number>()({
  name: 'FINISH_FOLD',
  shebang: '#!lua',
  keys: ['sealed', 'rows', 'folded', 'tombstone'],
  args: ['seq'],
  body: `${TOMBSTONES}
if storeDeleted() then return redis.call('DEL', K.sealed) * 0 + 1 end
if redis.call('LINDEX', K.sealed, 0) ~= A.seq then return 0 end
if redis.call('SCARD', K.rows) > 0 then return -1 end
redis.call('LPOP', K.sealed)
redis.call('SET', K.folded, A.seq)
return 1
`,
});

/** READ a row's outbox for the writer. KEYS: folded, outbox. Returns {foldedThrough or '', field, value, ...}. */
export const READ_OUTBOX = defineScript<string[]>()({
  name: 'READ_OUTBOX',
  shebang: '#!lua flags=no-writes',
  keys: ['folded', 'outbox', 'tombstone'],
  args: [],
  body: `${TOMBSTONES}
if storeDeleted() then return {''} end
local folded = redis.call('GET', K.folded) or ''
local data = redis.call('HGETALL', K.outbox)
table.insert(data, 1, folded)
return data
`,
});

/**
 * ACK outbox entries the writer has applied to DynamoDB, in one step, for a row whose history queries cache
 * (`historyCached` '1': a visitor row, as segment rules read it), with dropping its cache entry and bumping its cache
 * version (so no query can store a cache read before this write; a version key that expired starts again at `now`,
 * never at a value it had); other rows' cache and version keys are neither read nor written. When entries remain
 * (folded during the write, or of a bucket not completely folded at the read) the row stays dirty, its dirty time
 * moved up to the oldest entry's seq (the time its bucket opened: the entry was folded after it and after the dirty
 * time, so the idle policy's max age and the flush-lag gauge are never understated), and is rescheduled by its policy
 * (its later flush time, if any, is dropped: see DUE_LIST). The store's running count of outbox entries drops by the
 * counts deleted, not their limbs (never below 0, and restarts at 0 whenever the store has no dirty row left).
 * KEYS: outbox, cacheVersion, cache, dirty, due, counts, tombstone, dueLater. ARGV: pk, now, cacheVersionTtlSeconds, policyKind, a, b,
 * historyCached ('1'|'0'), then the fields to delete. Returns the number of entries left.
 */
export const ACK_OUTBOX = defineScript<number>()({
  name: 'ACK_OUTBOX',
  shebang: '#!lua',
  keys: ['outbox', 'cacheVersion', 'cache', 'dirty', 'due', 'counts', 'tombstone', 'dueLater'],
  args: ['pk', 'now', 'cacheVersionTtlSeconds', 'policyKind', 'a', 'b', 'historyCached'],
  body: `${LIMBS}${DUE}${TOMBSTONES}
if storeDeleted() then return 0 end
local pk = A.pk
local cached = A.historyCached == '1'
local now = tonumber(A.now)
-- Read phase: the types of every key written below, and the cache version INCR will bump.
redis.call('HLEN', K.outbox)
expectType(K.dirty, 'zset')
expectType(K.due, 'zset')
expectType(K.dueLater, 'hash')
local entries = readEntries(K.counts)
if not entries then return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.counts .. ' entries is not an integer') end
local version = cached and redis.call('GET', K.cacheVersion)
if version and not (string.match(version, '^%d+$') and #version < 16) then
  return redis.error_reply('TALLY_ERR_NOT_A_COUNT ' .. K.cacheVersion .. ' is not a cache version')
end
-- Write phase.
local counts, limbs = {}, {}
for i = AR, #ARGV do table.insert(isEntry(ARGV[i], 2) and counts or limbs, ARGV[i]) end
local deleted = 0
for c = 1, #counts, 500 do deleted = deleted + redis.call('HDEL', K.outbox, unpack(counts, c, math.min(c + 499, #counts))) end
for c = 1, #limbs, 500 do redis.call('HDEL', K.outbox, unpack(limbs, c, math.min(c + 499, #limbs))) end
if cached then
  redis.call('DEL', K.cache)
  -- A version that expired restarts at now (ms), above every one it had: restarted at 1, it could equal the version
  -- a query's in-process history memo was read at, and that memo would pass for current.
  if version then
    redis.call('INCR', K.cacheVersion)
  else
    redis.call('SET', K.cacheVersion, string.format('%d', now))
  end
  redis.call('EXPIRE', K.cacheVersion, A.cacheVersionTtlSeconds)
end
local left = redis.call('HLEN', K.outbox)
redis.call('HDEL', K.dueLater, pk)
if left == 0 then
  redis.call('ZREM', K.dirty, pk)
  redis.call('ZREM', K.due, pk)
else
  -- Still dirty: since the fold of its oldest entry left, at or after that entry's bucket opened (its seq, a time
  -- in ms) and at or after the row's dirty time, which moves up to that seq, never past now (another process's
  -- clock opened the bucket). Kept as it was, under a steady backlog every ack left entries and the dirty time stayed
  -- at the first fold: the flush lag climbed and an idle row past its max age was due at every tick.
  local oldest = nil
  for _, f in ipairs(redis.call('HKEYS', K.outbox)) do
    local seq = tonumber(string.match(f, '^(%d+)|'))
    if seq and (not oldest or seq < oldest) then oldest = seq end
  end
  local was = tonumber(redis.call('ZSCORE', K.dirty, pk))
  local first = was
  if not first or (oldest and oldest > first) then first = math.min(oldest or now, now) end
  -- At least 1 ms later than it was: the row's next flush job id (row + dirty time) must differ from the running
  -- job's, which BullMQ would ignore until that job completes; a tick between this ack and the completion would
  -- otherwise lease the row with no job for FLUSH_LEASE_TICKS. (An entry left was folded at or after was: at most
  -- 1 ms of flush lag is left out.)
  if was and first <= was then first = was + 1 end
  redis.call('ZADD', K.dirty, string.format('%d', first), pk)
  redis.call('ZREM', K.due, pk)
  schedule(K.dirty, K.due, pk, now, A.policyKind, tonumber(A.a), tonumber(A.b))
end
if redis.call('ZCARD', K.dirty) == 0 then
  redis.call('HDEL', K.counts, 'entries')
else
  redis.call('HSET', K.counts, 'entries', string.format('%d', math.max(0, entries - deleted)))
end
return left
`,
});

/**
 * SNAPSHOT, for a query, every Redis entry of the given rows not yet in DynamoDB — outbox, sealed-unfolded and
 * open buckets — each with its bucket seq, plus each row's cache entry and cache version.
 * KEYS: sealed, epoch, then per pk: outbox, cacheVersion, cache, and its bucket hash in each bucket of the
 * expected layout (the sealed seqs, then the epoch when there is one). ARGV: withCache ('1'|'0'), epoch (expected;
 * '' = none), sealedCount, the expected sealed seqs, then per pk: pk, knownVersion ('' = none).
 * Returns {1, { {pk entries: seq|day|metric, value, ...}, cacheJson or false (or '=' when the caller already holds
 * the cache at the current version), cacheVersion or '0' } per pk}, or {0, epoch or '', sealed seqs...} (nothing
 * read) when the layout is not the expected one.
 */
export const SNAPSHOT = defineScript<[1, Array<[string[], string | null, string]>] | [0, string, ...string[]]>()({
  name: 'SNAPSHOT',
  shebang: '#!lua flags=no-writes',
  keys: ['sealed', 'epoch'],
  args: ['withCache', 'epoch', 'sealedCount'],
  body: `
local buckets = redis.call('LRANGE', K.sealed, 0, -1)
local epoch = redis.call('GET', K.epoch) or ''
local same = epoch == A.epoch and #buckets == tonumber(A.sealedCount)
for b = 1, #buckets do
  if buckets[b] ~= ARGV[AR + b - 1] then same = false end
end
if not same then
  table.insert(buckets, 1, epoch)
  table.insert(buckets, 1, 0)
  return buckets
end
if epoch ~= '' then table.insert(buckets, epoch) end
local nb = #buckets
local out = {}
local p = 0
for i = AR + tonumber(A.sealedCount), #ARGV, 2 do
  local pk = ARGV[i]
  local kb = KR + p * (3 + nb)
  local entries = redis.call('HGETALL', KEYS[kb])
  for b, seq in ipairs(buckets) do
    local data = redis.call('HGETALL', KEYS[kb + 2 + b])
    for j = 1, #data, 2 do
      table.insert(entries, seq .. '|' .. data[j])
      table.insert(entries, data[j + 1])
    end
  end
  local cache = false
  local version = '0'
  if A.withCache == '1' then
    version = redis.call('GET', KEYS[kb + 1]) or '0'
    if ARGV[i + 1] ~= '' and ARGV[i + 1] == version then
      cache = '='
    else
      cache = redis.call('GET', KEYS[kb + 2]) or false
    end
  end
  table.insert(out, {entries, cache, version})
  p = p + 1
end
return {1, out}
`,
});

/**
 * FILL a row's cache with DynamoDB items read by a query, only if the writer has not acked anything for the
 * row since the query's snapshot (same cache version). KEYS: cacheVersion, cache. ARGV: version, json, ttlSeconds.
 */
export const FILL_CACHE = defineScript<number>()({
  name: 'FILL_CACHE',
  shebang: '#!lua',
  keys: ['cacheVersion', 'cache', 'tombstone'],
  args: ['version', 'json', 'ttlSeconds'],
  body: `${TOMBSTONES}
if storeDeleted() then return 0 end
local current = redis.call('GET', K.cacheVersion) or '0'
if current ~= A.version then return 0 end
redis.call('SET', K.cache, A.json, 'EX', A.ttlSeconds)
return 1
`,
});

/**
 * How far below a cut of 2^53 or more (relative) TOP still returns members: 2^-14, a bound on the rounding of a
 * score. A member's score is its deltas summed in doubles (a batch's in applyRows, then APPLY's `cur + d` on each
 * apply, then ZUNIONSTORE over the days), each sum and conversion off by at most u = 2^-53 of its result; the
 * deltas are non-negative, so a score with at most h roundings on any delta's path is within (1+u)^h - 1 ≈ h·u of
 * its total, relative. h is at most the applies to one day's ranking (Redis runs under 10^6 scripts a second, so
 * under 2^37 a day) plus the 92 days' sums and a few conversions: under 2^37 + 2^7, so ε < 2^-15.99. Then the
 * `limit` members scored at least the cut c hold totals of at least c/(1+ε), so does the true limit-th, and a member
 * of the true top `limit` is scored at least c·(1-ε)/(1+ε) > c·(1 - 2^-14.9): c·(1 - 2^-14) is below that even after
 * its own rounding. The margin costs nothing below 2^53 and, past it, reads the members within 0.006% of the cut.
 */
const INEXACT_MARGIN = '0.00006103515625'; // 2^-14, exact in decimal

/**
 * TOP members of a ranked entity over some days, from every bucket applied (APPLY ranks the open bucket's rows as
 * it counts them). KEYS: tmp (a scratch key of the store), then the daily ranking zsets. ARGV: limit, maxMembers.
 * The union (ZUNIONSTORE into tmp) costs time in the members of the zsets, and Redis serves no one else meanwhile:
 * the script first sums their ZCARDs (constant time each) and, past maxMembers, refuses with the error reply
 * `TALLY_ERR_TOP_TOO_LARGE <members>` before it writes anything (tmp is never made). Returns
 * member, score, ... : the first `limit` members by score, highest first, and by member (ascending) among equal
 * scores. ZRANGE … REV alone orders equal scores by member descending, so a cut inside a tie kept its highest ids
 * while top lists answer ties by id ascending: the members above the limit-th score (the cut) are all taken, then
 * the members at the cut in ascending order until `limit`. The members above come highest first, equal scores
 * among them in no set order; the members at the cut follow, ascending.
 * A score is exact while under 2^53 (integer deltas, and a sum under 2^53 is exact; rounding is monotone, so a
 * score under 2^53 is never a rounded larger total). A cut at 2^53 or more is not: distinct totals share a double
 * and a nearly-equal pair can even swap, so every member scored within INEXACT_MARGIN below the cut is returned too
 * (more than `limit` members, ties not cut) and the exact values read for them decide.
 */
export const TOP = defineScript<string[]>()({
  name: 'TOP',
  shebang: '#!lua',
  keys: ['tmp'],
  args: ['limit', 'maxMembers'],
  body: `
local limit = tonumber(A.limit)
if #KEYS < KR or limit < 1 then return {} end
local members = 0
for i = KR, #KEYS do members = members + redis.call('ZCARD', KEYS[i]) end
if members > tonumber(A.maxMembers) then return redis.error_reply('TALLY_ERR_TOP_TOO_LARGE ' .. members) end
redis.call('ZUNIONSTORE', K.tmp, #KEYS - KR + 1, unpack(KEYS, KR))
local out
local last = redis.call('ZRANGE', K.tmp, limit - 1, limit - 1, 'REV', 'WITHSCORES')
if #last == 0 then
  out = redis.call('ZRANGE', K.tmp, 0, -1, 'REV', 'WITHSCORES')
else
  -- The score as Redis replies it (17 significant digits) reads back as the same double.
  local cut = last[2]
  local c = tonumber(cut)
  if c >= 9007199254740992 then
    -- '%.17g' reads back as the same double (tostring keeps 14 digits).
    out = redis.call('ZRANGE', K.tmp, '+inf', string.format('%.17g', c - c * ${INEXACT_MARGIN}), 'BYSCORE', 'REV', 'WITHSCORES')
  else
    out = redis.call('ZRANGE', K.tmp, '+inf', '(' .. cut, 'BYSCORE', 'REV', 'WITHSCORES')
    local ties = redis.call('ZRANGE', K.tmp, cut, cut, 'BYSCORE', 'LIMIT', 0, limit - #out / 2, 'WITHSCORES')
    for _, v in ipairs(ties) do out[#out + 1] = v end
  end
end
redis.call('DEL', K.tmp)
return out
`,
});

/** Refresh the TTL of a cached row (the session is still active). KEYS: cache. ARGV: ttlSeconds. */
export const TOUCH_CACHE = defineScript<number>()({
  name: 'TOUCH_CACHE',
  shebang: '#!lua',
  keys: ['cache'],
  args: ['ttlSeconds'],
  body: `
return redis.call('EXPIRE', K.cache, A.ttlSeconds)
`,
});
