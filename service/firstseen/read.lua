-- Read codes of the first-seen set (the gate before it decides, a consumer before its batch).
-- ARGV[1]: the layout's tag (service/firstseen/encoding.py), then the numbers of the call's
-- slot groups, space-separated. On a Redis Cluster KEYS declare each group's generation
-- marker and pending-details hash (KEYS[2i-1], KEYS[2i]), as a cluster wants; on a single
-- server the script names them itself, from the tag and the group (fewer arguments to pack).
-- ARGV[2] packs the codes, each: group index i (u16) | bucket (u32) | field (6 bytes).
-- ARGV[3..] (optional, single server only): keys whose values come back first (the gate's
-- recent answer of a settlement, its confirmation, the last rebuild's time).
-- Reply, one string: the optional values (u32 length, then the bytes; length 0 = absent),
-- then for each code that is paid (most of a batch's codes are not, and are left out): its
-- position among the call's codes (u32), its value and its pending detail (each u16 length,
-- then the bytes).
-- Without a group's marker the group's data is not trustworthy: nothing is read.
local prefixes, pendings = {}, {}
local tag, i = nil, 0
for token in string.gmatch(ARGV[1], '%S+') do
  if not tag then
    tag = token
  else
    i = i + 1
    local marker = KEYS[2 * i - 1] or ('tg:gen{' .. token .. '}:' .. tag)
    if redis.call('EXISTS', marker) == 0 then
      return redis.error_reply('HOTSET_REBUILDING first-seen set is being rebuilt')
    end
    prefixes[i] = 'tg:fs{' .. token .. '}:'
    pendings[i] = KEYS[2 * i] or ('tg:pd{' .. token .. '}')
  end
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
    local pending = redis.call('HGET', pendings[g], field) or ''
    out[#out + 1] = struct.pack('>I4H', n, #value) .. value .. struct.pack('>H', #pending)
      .. pending
  end
  n = n + 1
end
return table.concat(out)
