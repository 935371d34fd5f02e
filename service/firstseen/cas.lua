-- Compare-and-set over the fields of one slot group (every key shares the hash tag {G}).
-- KEYS[1] = pending-details hash of the group, KEYS[2] = the group's generation marker,
-- KEYS[3..] = bucket hashes. Without the marker the group's data is not trustworthy (Redis
-- lost it, or a rebuild is under way): nothing is read or changed.
--
-- ARGV[1] packs every op of the call (one argument, not six per op: packing arguments is
-- what a large batch spends its time on). Each op is
--   op (1 byte) | key index into KEYS (2) | field (6) | expected, new, detail (each: length
--   as 2 bytes, then the bytes)
-- and the reply is one string with one entry per op:
--   G  read: value and pending detail, each length-prefixed (length 0 = absent)
--   S  if the value equals `expected` (empty = absent) set it to `new` (empty deletes) and
--      keep `detail` as the pending detail until the record has it: "\1", else "\0"
--   F  forget the pending detail (the record has it now): "\1"
-- The decision is made in Python; this script only makes each change atomic.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('HOTSET_REBUILDING first-seen set is being rebuilt')
end
local blob, pos, out, pending = ARGV[1], 1, {}, KEYS[1]
-- The pending hash holds a batch's new claims until the record has them, hundreds per group;
-- as a listpack every lookup would scan them all (measured: 2.6 µs per op at 400 entries, 1 µs
-- at 100). A value longer than hash-max-listpack-value makes Redis keep it a hash table, and
-- keeps the key from vanishing (to come back as a listpack) whenever the batch is recorded.
-- Its 1-byte field cannot meet a code's 6-byte field.
if redis.call('HEXISTS', pending, '!') == 0 then
  redis.call('HSET', pending, '!', string.rep('-', 200))
end
local function u16(at) return string.byte(blob, at) * 256 + string.byte(blob, at + 1) end
local function chunk()
  local size = u16(pos)
  local value = string.sub(blob, pos + 2, pos + 1 + size)
  pos = pos + 2 + size
  return value
end
local function prefixed(value)
  if not value then return '\0\0' end
  return string.char(math.floor(#value / 256), #value % 256) .. value
end
while pos <= #blob do
  local op = string.sub(blob, pos, pos)
  local key = KEYS[u16(pos + 1)]
  local field = string.sub(blob, pos + 3, pos + 8)
  pos = pos + 9
  local expected, new, detail = chunk(), chunk(), chunk()
  if op == 'G' then
    out[#out + 1] = prefixed(redis.call('HGET', key, field))
    out[#out + 1] = prefixed(redis.call('HGET', pending, field))
  elseif op == 'S' then
    if (redis.call('HGET', key, field) or '') == expected then
      if new == '' then
        redis.call('HDEL', key, field)
        redis.call('HDEL', pending, field)
      else
        redis.call('HSET', key, field, new)
        if detail ~= '' then redis.call('HSET', pending, field, detail) end
      end
      out[#out + 1] = '\1'
    else
      out[#out + 1] = '\0'
    end
  elseif op == 'F' then
    redis.call('HDEL', pending, field)
    out[#out + 1] = '\1'
  end
end
return table.concat(out)
