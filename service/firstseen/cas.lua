-- Compare-and-set over the fields of one slot group (every key shares the hash tag {G}).
-- KEYS[1] = pending-details hash of the group, KEYS[2] = the group's generation marker,
-- KEYS[3..] = bucket hashes. Without the marker the group's data is not trustworthy (Redis
-- lost it, or a rebuild is under way): nothing is read or changed.
-- ARGV is a flat list of 6-tuples: op, key index (into KEYS), field, expected, new, detail.
--   G  read                 -> {value or false, pending detail or false}
--   S  if the value equals `expected` ('' = absent) set it to `new` ('' deletes) and keep
--      `detail` as the pending detail (until the record has it)  -> 1, else 0
--   F  forget the pending detail (the record has it now)       -> 1
-- The decision is made in Python; this script only makes each change atomic.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('HOTSET_REBUILDING first-seen set is being rebuilt')
end
local out = {}
local pending = KEYS[1]
for i = 1, #ARGV, 6 do
  local op, key, field = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'G' then
    out[#out + 1] = {redis.call('HGET', key, field), redis.call('HGET', pending, field)}
  elseif op == 'S' then
    local current = redis.call('HGET', key, field) or ''
    if current == ARGV[i + 3] then
      if ARGV[i + 4] == '' then
        redis.call('HDEL', key, field)
        redis.call('HDEL', pending, field)
      else
        redis.call('HSET', key, field, ARGV[i + 4])
        if ARGV[i + 5] ~= '' then redis.call('HSET', pending, field, ARGV[i + 5]) end
      end
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  elseif op == 'F' then
    redis.call('HDEL', pending, field)
    out[#out + 1] = 1
  end
end
return out
