-- Apply a consumer batch's effects to the first-seen set, after its record is committed.
-- KEYS and ARGV[1]: the slot groups (groups.lua). ARGV[2] packs the effects, in the batch's order, each:
--   kind (u8) | group index (u16) | bucket (u32) | field (6) | token (u32) |
--   institution (u32) | day paid (u16) | units (u16) | pack size (u16)
-- Every kind is idempotent, so a batch redelivered after a crash may apply its effects again:
--   1 claim a whole pack: set if absent
--   2 release a whole pack: remove if `token` holds it
--   3 sell units of a split pack: open it if absent; else add them unless `token` is listed
--   4 return units of a split pack: take them back if `token` is listed
--   5 forget the pending detail (the record holds the first payment now)
-- A batch's effects land after its record commits, so the gate may have released a line's
-- claim meanwhile (a reversal): it left a mark, "X" .. token, as the code's pending detail.
-- A claim or sale of a marked token is not applied (it would bring the claim back); the
-- release or return of it clears the mark, which forgetting leaves alone.
-- A state is owner, institution (u32), day (u16) [, units used, pack size (u16), then the
-- token (u32) of every line that sold units]: service/firstseen/encoding.py.
-- The decisions were made in Python; this only makes their effects atomic and repeatable.

local function owners(value)
  local list = {}
  for at = 15, #value, 4 do list[#list + 1] = struct.unpack('>I4', value, at) end
  return list
end

local function listed(list, token)
  for _, t in ipairs(list) do if t == token then return true end end
  return false
end

local function marked(pending, field, token)
  return redis.call('HGET', pending, field) == 'X' .. struct.pack('>I4', token)
end

local function split_value(head, used, list)
  local parts = {string.sub(head, 1, 10), struct.pack('>HH', used, (struct.unpack('>H', head, 13)))}
  for _, t in ipairs(list) do parts[#parts + 1] = struct.pack('>I4', t) end
  return table.concat(parts)
end

local function sell(key, pending, field, value, token, inst, day, units, pack)
  if (not value or #value > 10) and marked(pending, field, token) then return end
  if not value then
    redis.call('HSET', key, field, struct.pack('>I4I4HHHI4', token, inst, day, units, pack, token))
  elseif #value > 10 then
    local list = owners(value)
    if not listed(list, token) then
      list[#list + 1] = token
      redis.call('HSET', key, field, split_value(value, struct.unpack('>H', value, 11) + units, list))
    end
  end
end

local function give_back(key, field, pending, value, token, units)
  if not value or #value <= 10 then return end
  local list, kept = owners(value), {}
  if not listed(list, token) then return end
  for _, t in ipairs(list) do if t ~= token then kept[#kept + 1] = t end end
  local left = struct.unpack('>H', value, 11) - units
  if left <= 0 then
    redis.call('HDEL', key, field)
    redis.call('HDEL', pending, field)
  else
    redis.call('HSET', key, field, split_value(value, left, kept))
  end
end

local blob, pos = ARGV[2], 1
local size = #blob
while pos <= size do
  local kind, g, bucket, field, token, inst, day, units, pack
  kind, g, bucket, field, token, inst, day, units, pack, pos =
    struct.unpack('>BHI4c6I4I4HHH', blob, pos)
  local key, pending = prefixes[g] .. bucket, pendings[g]
  if kind == 5 then
    local detail = redis.call('HGET', pending, field)
    if detail and string.sub(detail, 1, 1) ~= 'X' then redis.call('HDEL', pending, field) end
  elseif kind == 1 then  -- nearly every effect: set if absent, then unset if marked
    if redis.call('HSETNX', key, field, struct.pack('>I4I4H', token, inst, day)) == 1
        and marked(pending, field, token) then
      redis.call('HDEL', key, field)
    end
  else
    local value = redis.call('HGET', key, field)
    if kind == 2 then
      if value and #value == 10 and struct.unpack('>I4', value) == token then
        redis.call('HDEL', key, field)
        redis.call('HDEL', pending, field)
      elseif marked(pending, field, token) then
        redis.call('HDEL', pending, field)
      end
    elseif kind == 3 then
      sell(key, pending, field, value, token, inst, day, units, pack)
    elseif kind == 4 then
      if marked(pending, field, token) then redis.call('HDEL', pending, field) end
      give_back(key, field, pending, value, token, units)
    end
  end
end
return size
