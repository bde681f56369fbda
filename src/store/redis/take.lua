-- Take: lease up to ARGV[2] items of one kind of work that are due, for
-- every kind (deliveries, Read Session checks, order watches).
-- KEYS: 1 the due set, 2 the leased set.
-- ARGV: 1 now (unix ms: what is due), 2 limit, 3 when the new leases expire,
--       4 the record key prefix ('{prefix}d:' or '{prefix}r:'), 5 the clock
--       (unix ms: which leases have expired), 6 the record field that says
--       an item still wants work and 7 its values, '|'-separated ('state'
--       'pending', 'state' 'active', 'w_state' 'watching|releasing'), 8 the lease token stem
--       ('{replica}-{now}'), or '' when the record keeps no token.
-- Returns [id, lease token ('' for none), {record fields}] triples, flat.
-- Atomically: expired leases (their holder died) go back to the due set
-- first, and each id taken moves from due to leased, with its token written
-- on the record, so no two replicas hold one item at once. An id whose record
-- is gone or wants no more work is dropped from the due set.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[5], id)
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. id
  local v = redis.call('HGET', key, ARGV[6])
  if v and string.find('|' .. ARGV[7] .. '|', '|' .. v .. '|', 1, true) then
    local token = ''
    if ARGV[8] ~= '' then
      token = ARGV[8] .. ':' .. i
      redis.call('HSET', key, 'lease', token)
    end
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
