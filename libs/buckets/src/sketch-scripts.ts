/**
 * Lua scripts of the distinct-count sketches (unique visitors), kept apart from the counters' scripts. Each runs
 * on one store's keys (KEYS[1] = the store's tag prefix `<p>:{store}:`) and follows the rule of every script:
 * all reads and checks first, then writes that cannot fail.
 *
 * Keys, per row pk and sketch field F = `<dayKey>|<metric code>` (a row's sketch of one store-local day):
 *   <tag>us:<pk>|F   set of 8-byte members while it holds at most T of them (T = ARGV threshold); once it holds
 *                    more it stops growing and means "more than T": the HLL then answers
 *   <tag>uh:<pk>|F   Redis HyperLogLog of every member (PFADD)
 *   <tag>ur:<pk>     set of the fields F of the row not yet written to DynamoDB
 *   <tag>ux:<id>...  scratch HLLs of one SKETCH_UNION call (deleted by it; they expire after 60 s if it fails)
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
 * SKETCH_ADD the members of a batch. ARGV: T, rowCount, then per row: pk, fieldCount, then per field: F,
 * memberCount, members. PFADDs every member; SADDs them to the exact set while it holds at most T; notes F as
 * unwritten for the row. Idempotent: adding a member twice changes nothing.
 */
export const SKETCH_ADD = `#!lua
${CHECKS}
local tag = KEYS[1]
local T = tonumber(ARGV[1])
local plan = {}
local i = 3
for r = 1, tonumber(ARGV[2]) do
  local pk = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  expectType(tag .. 'ur:' .. pk, 'set')
  for f = 1, n do
    local field = ARGV[i]
    local m = tonumber(ARGV[i + 1])
    local base = pk .. '|' .. field
    expectType(tag .. 'us:' .. base, 'set')
    expectHll(tag .. 'uh:' .. base)
    table.insert(plan, {pk, field, base, i + 2, m})
    i = i + 2 + m
  end
end
for _, p in ipairs(plan) do
  local pk, field, base, from, m = p[1], p[2], p[3], p[4], p[5]
  for c = from, from + m - 1, 1000 do
    local to = math.min(c + 999, from + m - 1)
    redis.call('PFADD', tag .. 'uh:' .. base, unpack(ARGV, c, to))
    if redis.call('SCARD', tag .. 'us:' .. base) <= T then redis.call('SADD', tag .. 'us:' .. base, unpack(ARGV, c, to)) end
  end
  redis.call('SADD', tag .. 'ur:' .. pk, field)
end
return #plan
`;

/**
 * SKETCH_READ the unwritten sketches of rows. ARGV: T, pks. Per row, a list of F, blob, scard, registers (the HLL
 * string without its 16-byte header, for SKETCH_ACK's comparison). The blob is exact (`X`) while the set holds at
 * most T members.
 */
export const SKETCH_READ = `#!lua flags=no-writes
local tag = KEYS[1]
local T = tonumber(ARGV[1])
local out = {}
for a = 2, #ARGV do
  local pk = ARGV[a]
  local row = {}
  for _, field in ipairs(redis.call('SMEMBERS', tag .. 'ur:' .. pk)) do
    local base = pk .. '|' .. field
    local n = redis.call('SCARD', tag .. 'us:' .. base)
    local h = redis.call('GET', tag .. 'uh:' .. base) or ''
    local blob
    if n <= T then blob = 'X' .. table.concat(redis.call('SMEMBERS', tag .. 'us:' .. base)) else blob = 'H' .. h end
    table.insert(row, field)
    table.insert(row, blob)
    table.insert(row, tostring(n))
    table.insert(row, string.sub(h, 17))
  end
  table.insert(out, row)
end
return out
`;

/**
 * SKETCH_ACK written sketches of a row: ARGV: pk, then per field: F, scard, registers as SKETCH_READ gave them.
 * Deletes a field's set and HLL and forgets F only when neither changed since that read (a member added since
 * keeps them for the next flush). Returns the number of fields deleted.
 */
export const SKETCH_ACK = `#!lua
${CHECKS}
local tag = KEYS[1]
local pk = ARGV[1]
expectType(tag .. 'ur:' .. pk, 'set')
local drop = {}
for a = 2, #ARGV, 3 do
  local base = pk .. '|' .. ARGV[a]
  expectType(tag .. 'us:' .. base, 'set')
  expectHll(tag .. 'uh:' .. base)
  local h = redis.call('GET', tag .. 'uh:' .. base) or ''
  if tostring(redis.call('SCARD', tag .. 'us:' .. base)) == ARGV[a + 1] and string.sub(h, 17) == ARGV[a + 2] then table.insert(drop, ARGV[a]) end
end
for _, field in ipairs(drop) do
  local base = pk .. '|' .. field
  redis.call('DEL', tag .. 'us:' .. base, tag .. 'uh:' .. base)
  redis.call('SREM', tag .. 'ur:' .. pk, field)
end
return #drop
`;

/**
 * SKETCH_UNION groups of blobs. ARGV: T, wantBlob ('1'/'0'), scratch id, groupCount, then per group: n, blobs.
 * Per group: {count, blob}. A group of exact blobs only is counted exactly (its blob stays exact while it has at
 * most T members); any HLL in a group makes its answer the HLL of the union: the HLLs PFMERGEd with every exact
 * member PFADDed, counted by PFCOUNT. Every blob's form is checked before the first (scratch) write.
 */
export const SKETCH_UNION = `#!lua
local tag = KEYS[1]
local T = tonumber(ARGV[1])
local wantBlob = ARGV[2] == '1'
local scratch = tag .. 'ux:' .. ARGV[3]
local groups = {}
local i = 5
for g = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i])
  local blobs = {}
  for k = 1, n do
    local b = ARGV[i + k]
    local kind = string.sub(b, 1, 1)
    if kind == 'X' then
      if (#b - 1) % 8 ~= 0 then return redis.error_reply('TALLY_ERR_SKETCH exact sketch of ' .. (#b - 1) .. ' bytes') end
    elseif kind == 'H' then
      local enc = string.byte(b, 6)
      if string.sub(b, 2, 5) ~= 'HYLL' or #b < 17 or (enc == 0 and #b ~= 12305) or (enc ~= 0 and enc ~= 1) then
        return redis.error_reply('TALLY_ERR_SKETCH not a HyperLogLog')
      end
    else
      return redis.error_reply('TALLY_ERR_SKETCH unknown sketch form')
    end
    blobs[k] = b
  end
  groups[g] = blobs
  i = i + 1 + n
end
local out = {}
for g, blobs in ipairs(groups) do
  local seen, members, hlls = {}, {}, {}
  for _, b in ipairs(blobs) do
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
    out[g] = {#members, wantBlob and ('X' .. table.concat(members)) or ''}
  else
    local dest = scratch .. ':' .. g
    redis.call('DEL', dest)
    for k, h in ipairs(hlls) do
      local src = dest .. ':' .. k
      redis.call('SET', src, h, 'PX', 60000)
      redis.call('PFMERGE', dest, src)
      redis.call('DEL', src)
    end
    for c = 1, #members, 1000 do redis.call('PFADD', dest, unpack(members, c, math.min(c + 999, #members))) end
    if #hlls == 0 and #members == 0 then redis.call('PFADD', dest) end
    redis.call('PEXPIRE', dest, 60000)
    local count = redis.call('PFCOUNT', dest)
    out[g] = {count, wantBlob and ('H' .. redis.call('GET', dest)) or ''}
    redis.call('DEL', dest)
  end
end
return out
`;
