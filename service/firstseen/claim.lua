-- The gate's claims: every compare-and-set of one settlement lands, or none does.
-- KEYS and ARGV[1]: the slot groups (groups.lua). ARGV[2] packs the changes, each:
--   group index (u16) | bucket (u32) | field (6) | expected, new, detail (each: u16 length,
--   then the bytes; an empty expected = unpaid, an empty new = remove)
-- A change lands only if the code still holds `expected`; a change from unpaid also keeps
-- `detail` (the first payment) in the group's pending hash until the record has it, and a
-- release of the gate's reversal keeps a mark there until the record has the reversal.
-- ARGV[3] (optional): the key of the settlement's recent answer, ARGV[4] its value and
-- ARGV[5] its time to live: if the key exists already (a replay, or the same settlement
-- decided concurrently) nothing changes and its value comes back ("R" .. value); else it is
-- set with the changes. ARGV[6..] (optional, single server only): guards, pairs of a key
-- and the value it must hold ('' = absent), else nothing changes and the reply is "G" (the
-- gate decided on what it read of them earlier). Reply "O" when everything landed, "F" and
-- the failed changes' positions (u16 each, 0-based) when a code had changed since it was
-- read.
for n = 6, #ARGV, 2 do
  if (redis.call('GET', ARGV[n]) or '') ~= ARGV[n + 1] then return 'G' end
end
local recent = ARGV[3]
if recent and recent ~= '' then
  local prior = redis.call('GET', recent)
  if prior then return 'R' .. prior end
end
local blob, pos, changes = ARGV[2], 1, {}
local function chunk()
  local size = struct.unpack('>H', blob, pos)
  local value = string.sub(blob, pos + 2, pos + 1 + size)
  pos = pos + 2 + size
  return value
end
while pos <= #blob do
  local g, bucket, field
  g, bucket, field, pos = struct.unpack('>HI4c6', blob, pos)
  local expected, new, detail = chunk(), chunk(), chunk()
  changes[#changes + 1] = {prefixes[g] .. bucket, pendings[g], field, expected, new, detail}
end
local failed = {}
for n, c in ipairs(changes) do
  if (redis.call('HGET', c[1], c[3]) or '') ~= c[4] then
    failed[#failed + 1] = struct.pack('>H', n - 1)
  end
end
if #failed > 0 then return 'F' .. table.concat(failed) end
-- As a listpack every pending lookup would scan the whole hash (hundreds of in-flight
-- claims per group); a value past hash-max-listpack-value keeps it a hash table, and keeps
-- the key from vanishing and coming back as a listpack. Its 1-byte field meets no code's.
for n = 1, i do
  if redis.call('HEXISTS', pendings[n], '!') == 0 then
    redis.call('HSET', pendings[n], '!', string.rep('-', 200))
  end
end
-- A change's detail is a claim's first payment, a marked release's mark (store.release_mark)
-- or empty: a claim from unpaid without one drops what the pending hash held for the code.
for _, c in ipairs(changes) do
  if c[5] == '' then
    redis.call('HDEL', c[1], c[3])
  else
    redis.call('HSET', c[1], c[3], c[5])
  end
  if c[6] ~= '' then
    redis.call('HSET', c[2], c[3], c[6])
  elseif c[4] == '' or c[5] == '' then
    redis.call('HDEL', c[2], c[3])
  end
end
if recent and recent ~= '' then redis.call('SET', recent, ARGV[4], 'EX', ARGV[5]) end
return 'O'
