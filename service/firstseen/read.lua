-- Read codes of the first-seen set (the gate before it decides, a consumer before its batch).
-- KEYS and ARGV[1]: the slot groups (groups.lua, run before this). ARGV[2] packs the codes, each: group index i (u16) | bucket (u32) | field (6 bytes).
-- ARGV[3..] (optional, single server only): keys whose values come back first (the gate's
-- recent answer of a settlement, its confirmation, the last rebuild's time).
-- Reply, one string: the optional values (u32 length, then the bytes; length 0 = absent),
-- then for each code that is paid (most of a batch's codes are not, and are left out): its
-- position among the call's codes (u32), its value and its pending detail (each u16 length,
-- then the bytes).
local out = {}
for n = 3, #ARGV do
  local value = redis.call('GET', ARGV[n]) or ''
  out[#out + 1] = struct.pack('>I4', #value) .. value
end
local blob, pos, n = ARGV[2], 1, 0
local size = #blob
while pos <= size do
  local g, bucket, field
  g, bucket, field, pos = struct.unpack('>HI4c6', blob, pos)
  local value = redis.call('HGET', prefixes[g] .. bucket, field)
  if value then
    local pending = redis.call('HGET', pendings[g], field) or ''
    out[#out + 1] = struct.pack('>I4H', n, #value) .. value .. struct.pack('>H', #pending)
      .. pending
  end
  n = n + 1
end
return table.concat(out)
