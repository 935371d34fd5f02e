-- The start of every first-seen script (store.py puts it before each): the slot groups a call
-- touches. ARGV[1] is the layout's tag (service/firstseen/encoding.py), then the numbers of the
-- call's slot groups, space-separated. On a Redis Cluster KEYS declare each group's generation
-- marker and pending-details hash (KEYS[2i-1], KEYS[2i]), as a cluster wants; on a single
-- server the script names them itself, from the tag and the group (fewer arguments to pack).
-- Without a group's marker the group's data is not trustworthy: nothing is done. Sets
-- `prefixes[i]` (the group's bucket keys' prefix), `pendings[i]` and `i` (the group count).
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
