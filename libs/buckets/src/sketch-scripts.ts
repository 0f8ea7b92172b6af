import { defineScript } from './script-table';
import { TOMBSTONES } from './scripts';

/**
 * Lua scripts of the distinct-count sketches (unique visitors), kept apart from the counters' scripts. Each runs on one
 * store's keys (one hash slot), every key it touches declared in KEYS (SketchStore names them; see key-layout
 * redis-keys), and follows the rule of every script: all reads and checks first, then writes that cannot fail (but for
 * SKETCH_ADD's row sets of one field, whose writes are their checks and are taken back). Per row and sketch field F =
 * `<dayKey>|<metric code>`: `us` the exact set (while it has at most T = EXACT_THRESHOLD members; past T it stops
 * growing and means "more than T"), `uh` the Redis HyperLogLog of every member once the set has passed T (none before),
 * `ur` the row's set of unwritten fields.
 *
 * A sketch crosses the scripts as a blob: `X` + members (8 bytes each; exact) or `H` + a Redis HLL string.
 */

const CHECKS = `
local function expectType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want) end
end
local function expectHll(key)
  expectType(key, 'string')
  local head = redis.call('GETRANGE', key, 0, 3)
  if head ~= '' and head ~= 'HYLL' then error('WRONGTYPE ' .. key .. ' is not a HyperLogLog') end
end
`;

/**
 * SKETCH_ADD a batch's members. KEYS tail, per row: its `ur`, then per field its `us`, `uh`. ARGV: threshold, now
 * (ms), rowsPrefix (every `ur` key is rowsPrefix followed by its row's pk), then per row: fieldCount, then per field:
 * F, members (one string of their 8-byte ids one after another). A row's pk is read from its `ur` key, and only when
 * the store has erased rows (no pk argument per row).
 * SADDs them to the exact set while it holds at most T, past T PFADDs them (at the crossing all the set's) to the HLL,
 * notes F as unwritten. Idempotent. A deleted store (its `tombstone`, checked first) writes nothing and returns -1, so
 * an in-flight batch re-creates no sketch; a row of an erased visitor (`erased`, as APPLY: see TOMBSTONES) is left out
 * whole, so an in-flight batch re-creates none of its sketches (ERASE_ROW deleted them). A refused call leaves
 * nothing behind. Every set and HLL is checked before the first write by a
 * read that fails on a wrong type, not by a TYPE of its own: SCARD of each set; GETRANGE of the HLL (whose header it
 * checks too) of a set past T, and one EXISTS of all the others' HLLs, which do not exist (an HLL is made when its set
 * passes T and deleted with it); if any does, each of them is read as for a set past T. A row set is checked by its
 * SCARD for a row of no or several fields, and for a row of one field by its SADD, the first writes: when one is
 * refused, the fields those before it added are SREMed again (each SADD of one field tells whether it added it) before
 * the error reply. Members are split by `struct.unpack` (one C call per 1,000), not a `string.sub` each.
 */
export const SKETCH_ADD = defineScript<number>()({
  name: 'SKETCH_ADD',
  shebang: '#!lua',
  keys: ['tombstone', 'erased'],
  args: ['threshold', 'now', 'rowsPrefix'],
  body: `${TOMBSTONES}
if storeDeleted() then return -1 end
local T = tonumber(A.threshold)
local now = tonumber(A.now)
local erasedRows = erasedType() ~= 'none'
local P = #A.rowsPrefix
-- A row's pk: its \`ur\` key after rowsPrefix (read only when the store has erased rows).
local function pkOf(ur)
  if string.sub(ur, 1, P) ~= A.rowsPrefix then error('TALLY_ERR_ARGUMENT row key ' .. ur .. ' does not start with the rows prefix') end
  return string.sub(ur, P + 1)
end
local function checkHll(uh)
  local head = redis.call('GETRANGE', uh, 0, 3)
  if head ~= '' and head ~= 'HYLL' then error('WRONGTYPE ' .. uh .. ' is not a HyperLogLog') end
end
-- Read phase. plan: us, uh, members per field; ones, multi: ur, F (rows of one field) and ur, {F...} (of several).
local plan, ones, multi, size, checked, unmade = {}, {}, {}, {}, {}, {}
local k, i, last = KR, AR, #ARGV
while i <= last do
  local ur = KEYS[k]
  k = k + 1
  local n = tonumber(ARGV[i])
  i = i + 1
  if erasedRows and rowErased(pkOf(ur), now) then
    -- An erased visitor's row: none of its keys is read or written.
    k = k + 2 * n
    i = i + 2 * n
  else
    if n ~= 1 then redis.call('SCARD', ur) end
    local fields = {}
    for f = 1, n do
      local us, uh, blob = KEYS[k], KEYS[k + 1], ARGV[i + 1]
      k = k + 2
      if #blob % 8 ~= 0 then return redis.error_reply('TALLY_ERR_SKETCH members of ' .. #blob .. ' bytes') end
      local s = size[us]
      if not s then
        s = redis.call('SCARD', us)
        size[us] = s
      end
      if not checked[uh] then
        checked[uh] = true
        if s > T then checkHll(uh) else unmade[#unmade + 1] = uh end
      end
      plan[#plan + 1] = us
      plan[#plan + 1] = uh
      plan[#plan + 1] = blob
      fields[f] = ARGV[i]
      i = i + 2
    end
    if n == 1 then
      ones[#ones + 1] = ur
      ones[#ones + 1] = fields[1]
    elseif n > 1 then
      multi[#multi + 1] = ur
      multi[#multi + 1] = fields
    end
  end
end
local made = 0
for c = 1, #unmade, 1000 do made = made + redis.call('EXISTS', unpack(unmade, c, math.min(c + 999, #unmade))) end
if made > 0 then
  for _, uh in ipairs(unmade) do checkHll(uh) end
end
-- Write phase: rows of one field (a refused SADD takes back the fields added before it), then nothing can fail.
local added = {}
for r = 1, #ones, 2 do
  local got = redis.pcall('SADD', ones[r], ones[r + 1])
  if type(got) == 'table' then
    for a = 1, #added, 2 do redis.call('SREM', added[a], added[a + 1]) end
    return got
  end
  if got == 1 then
    added[#added + 1] = ones[r]
    added[#added + 1] = ones[r + 1]
  end
end
for r = 1, #multi, 2 do redis.call('SADD', multi[r], unpack(multi[r + 1])) end
local struct, formats = struct, {}
for p = 1, #plan, 3 do
  local us, uh, blob = plan[p], plan[p + 1], plan[p + 2]
  for c = 1, #blob, 8000 do
    local members
    if #blob == 8 then
      members = {blob}
    else
      local n = (math.min(c + 7999, #blob) - c + 1) / 8
      local format = formats[n]
      if not format then
        format = string.rep('c8', n)
        formats[n] = format
      end
      members = {struct.unpack(format, blob, c)}
      members[n + 1] = nil -- unpack's next position
    end
    if size[us] > T then
      redis.call('PFADD', uh, unpack(members))
    else
      size[us] = size[us] + redis.call('SADD', us, unpack(members))
      if size[us] > T then redis.call('PFADD', uh, unpack(redis.call('SMEMBERS', us))) end -- passed T: the HLL from now on
    end
  end
end
return #plan / 3
`,
});

/** SKETCH_FIELDS: KEYS tail: rows' `ur`. Per row, its unwritten fields. */
export const SKETCH_FIELDS = defineScript<string[][]>()({
  name: 'SKETCH_FIELDS',
  shebang: '#!lua flags=no-writes',
  keys: [],
  args: [],
  body: `
local out = {}
for k = KR, #KEYS do out[#out + 1] = redis.call('SMEMBERS', KEYS[k]) end
return out
`,
});

/**
 * SKETCH_READ sketches. KEYS tail, per sketch: `us`, `uh`. Per sketch: blob (exact while the set holds at most T),
 * the set's size and the HLL's registers (the string after its 16-byte header), for SKETCH_ACK's comparison.
 */
export const SKETCH_READ = defineScript<Buffer[][]>()({
  name: 'SKETCH_READ',
  shebang: '#!lua flags=no-writes',
  keys: [],
  args: ['threshold'],
  body: `
local T = tonumber(A.threshold)
local out = {}
for k = KR, #KEYS, 2 do
  local n = redis.call('SCARD', KEYS[k])
  local h = redis.call('GET', KEYS[k + 1]) or ''
  local blob
  if n <= T then blob = 'X' .. table.concat(redis.call('SMEMBERS', KEYS[k])) else blob = 'H' .. h end
  out[#out + 1] = {blob, tostring(n), string.sub(h, 17)}
end
return out
`,
});

/**
 * SKETCH_ACK written sketches of a row. KEYS: ur, then per sketch `us`, `uh`. ARGV tail, per sketch: F, scard,
 * registers as SKETCH_READ gave them, and the members read when the sketch was exact ('' when it was an HLL).
 * Deletes a sketch's set and HLL and forgets F only when neither changed since that read (a member added since keeps
 * them for the next flush). An exact sketch is the same only if it still holds every member read: the same size
 * is not enough, as another flush of the row may have acked it and a new batch re-created it with as many members
 * in between. Returns the number of sketches deleted.
 */
export const SKETCH_ACK = defineScript<number>()({
  name: 'SKETCH_ACK',
  shebang: '#!lua',
  keys: ['rows'],
  args: [],
  body: `${CHECKS}
expectType(K.rows, 'set')
local drop = {}
local k = KR
for a = AR, #ARGV, 4 do
  local us, uh, read = KEYS[k], KEYS[k + 1], ARGV[a + 3]
  k = k + 2
  expectType(us, 'set')
  expectHll(uh)
  local h = redis.call('GET', uh) or ''
  local same = tostring(redis.call('SCARD', us)) == ARGV[a + 1] and string.sub(h, 17) == ARGV[a + 2]
  if same and read ~= '' then
    local members = {}
    for b = 1, #read, 8 do members[#members + 1] = string.sub(read, b, b + 7) end
    for _, has in ipairs(redis.call('SMISMEMBER', us, unpack(members))) do
      if has == 0 then same = false end
    end
  end
  if same then table.insert(drop, {ARGV[a], us, uh}) end
end
for _, d in ipairs(drop) do
  redis.call('DEL', d[2], d[3])
  redis.call('SREM', K.rows, d[1])
end
return #drop
`,
});

/**
 * SKETCH_UNION groups of blobs. KEYS tail, per group: a scratch key, then one per `H` blob of the group. ARGV:
 * threshold, wantBlob ('1'/'0'), then per group: n, blobs. Per group: {count, blob}. A group of exact blobs only is
 * counted exactly (its blob stays exact while it has at most T members); any HLL in a group makes its answer the
 * HLL of the union: the HLLs PFMERGEd with every exact member PFADDed, counted by PFCOUNT. Every blob's form is
 * checked before the first (scratch) write; scratch keys are deleted, and expire after 60 s if Redis refuses a
 * corrupt sparse HLL midway.
 */
export const SKETCH_UNION = defineScript<Array<[number, Buffer]>>()({
  name: 'SKETCH_UNION',
  shebang: '#!lua',
  keys: [],
  args: ['threshold', 'wantBlob'],
  body: `
local T = tonumber(A.threshold)
local wantBlob = A.wantBlob == '1'
local groups = {}
local i, k = AR, KR
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local g = {dest = KEYS[k], blobs = {}, srcs = {}}
  k = k + 1
  for b = 1, n do
    local blob = ARGV[i + b]
    local kind = string.sub(blob, 1, 1)
    if kind == 'X' then
      if (#blob - 1) % 8 ~= 0 then return redis.error_reply('TALLY_ERR_SKETCH exact sketch of ' .. (#blob - 1) .. ' bytes') end
    elseif kind == 'H' then
      local enc = string.byte(blob, 6)
      if string.sub(blob, 2, 5) ~= 'HYLL' or #blob < 17 or (enc == 0 and #blob ~= 12305) or (enc ~= 0 and enc ~= 1) then
        return redis.error_reply('TALLY_ERR_SKETCH not a HyperLogLog')
      end
      g.srcs[#g.srcs + 1] = KEYS[k]
      k = k + 1
    else
      return redis.error_reply('TALLY_ERR_SKETCH unknown sketch form')
    end
    g.blobs[b] = blob
  end
  groups[#groups + 1] = g
  i = i + 1 + n
end
local out = {}
for gi, g in ipairs(groups) do
  local seen, members, hlls = {}, {}, {}
  for _, b in ipairs(g.blobs) do
    if string.sub(b, 1, 1) == 'X' then
      for p = 2, #b, 8 do
        local m = string.sub(b, p, p + 7)
        if not seen[m] then
          seen[m] = true
          members[#members + 1] = m
        end
      end
    else
      hlls[#hlls + 1] = string.sub(b, 2)
    end
  end
  if #hlls == 0 and (not wantBlob or #members <= T) then
    out[gi] = {#members, wantBlob and ('X' .. table.concat(members)) or ''}
  else
    redis.call('DEL', g.dest)
    for h, src in ipairs(g.srcs) do
      redis.call('SET', src, hlls[h], 'PX', 60000)
      redis.call('PFMERGE', g.dest, src)
      redis.call('DEL', src)
    end
    for c = 1, #members, 1000 do redis.call('PFADD', g.dest, unpack(members, c, math.min(c + 999, #members))) end
    if #hlls == 0 and #members == 0 then redis.call('PFADD', g.dest) end
    redis.call('PEXPIRE', g.dest, 60000)
    local count = redis.call('PFCOUNT', g.dest)
    out[gi] = {count, wantBlob and ('H' .. redis.call('GET', g.dest)) or ''}
    redis.call('DEL', g.dest)
  end
end
return out
`,
});
