-- Take watches: like take_checks.lua, for order watches.
-- KEYS: 1 wdue, 2 wleased.
-- ARGV: 1 now (unix ms: what is due), 2 limit, 3 when the new leases expire,
--       4 the record key prefix ('{prefix}d:'), 5 the clock (unix ms: which
--       leases have expired).
-- Returns [id, {record fields}] pairs, flat.
-- Atomically: expired leases (their holder died) go back to `wdue` first,
-- and each id taken moves from `wdue` to `wleased`, so no two replicas check
-- one session at once. An id whose record is gone or no longer watching is
-- dropped.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[5], id)
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'w_state') == 'watching' then
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
