-- Read codes of the first-seen set (the gate before it decides, a consumer before its batch).
-- KEYS: per slot group of the call, its generation marker and its pending-details hash
-- (KEYS[2i-1], KEYS[2i]); ARGV[1]: the groups' numbers, space-separated, in that order.
-- ARGV[2] packs the codes, each: group index i (u16) | bucket (u32) | field (6 bytes).
-- ARGV[3..] (optional, single server only): keys whose values come back first (the gate's
-- recent answer of a settlement, its confirmation, the last rebuild's time).
-- Reply, one string: the optional values (u32 length, then the bytes; length 0 = absent),
-- then for each code that is paid (most of a batch's codes are not, and are left out): its
-- position among the call's codes (u32), its value and its pending detail (each u16 length,
-- then the bytes).
-- Without a group's marker the group's data is not trustworthy: nothing is read.
local prefixes = {}
local i = 0
for group in string.gmatch(ARGV[1], '%d+') do
  i = i + 1
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then
    return redis.error_reply('HOTSET_REBUILDING first-seen set is being rebuilt')
  end
  prefixes[i] = 'tg:fs{' .. group .. '}:'
end
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
    local pending = redis.call('HGET', KEYS[2 * g], field) or ''
    out[#out + 1] = struct.pack('>I4H', n, #value) .. value .. struct.pack('>H', #pending)
      .. pending
  end
  n = n + 1
end
return table.concat(out)
