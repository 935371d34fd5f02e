-- Bulk load for a rebuild: every KEYS[i] is a bucket hash of one slot group (one hash tag, so
-- the call also runs on a Redis Cluster) and ARGV[i] holds all its new fields, each
--   field (6 bytes, encoding.FIELD_BYTES) | value length (2 bytes) | value
-- Framing the fields here, not as separate arguments, is the point: packing two arguments per
-- code in the client cost more than everything else a rebuild does. HSET takes up to 1,000
-- fields per call so Lua's stack stays small.
local sub, byte, unpack = string.sub, string.byte, unpack
for i = 1, #KEYS do
  local blob, args, n, pos, last = ARGV[i], {}, 0, 1, #ARGV[i]
  while pos <= last do
    local size = byte(blob, pos + 6) * 256 + byte(blob, pos + 7)
    args[n + 1] = sub(blob, pos, pos + 5)
    args[n + 2] = sub(blob, pos + 8, pos + 7 + size)
    n, pos = n + 2, pos + 8 + size
    if n == 2000 then
      redis.call('HSET', KEYS[i], unpack(args, 1, n))
      n = 0
    end
  end
  if n > 0 then redis.call('HSET', KEYS[i], unpack(args, 1, n)) end
end
return #KEYS
