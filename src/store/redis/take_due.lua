-- Take due: lease up to ARGV[2] pending deliveries due now.
-- KEYS: 1 due, 2 leased.
-- ARGV: 1 now (unix ms), 2 limit, 3 when the new leases expire,
--       4 the record key prefix ('{prefix}d:'), 5 the lease token stem
--       ('{replica}-{now}').
-- Returns [id, lease token, {record fields}] triples, flat.
-- Atomically: expired leases (their holder died) go back to `due` first, and
-- each id taken moves from `due` to `leased` with its token written on the
-- record, so no two replicas hold one delivery at once. An id whose record is
-- gone or no longer pending is dropped from `due`.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for i, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'state') == 'pending' then
    local token = ARGV[5] .. ':' .. i
    redis.call('HSET', key, 'lease', token)
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
