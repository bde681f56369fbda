-- Take checks: like take_due.lua, for registrations.
-- KEYS: 1 rdue, 2 rleased.
-- ARGV: 1 now (unix ms), 2 limit, 3 when the new leases expire,
--       4 the registration key prefix ('{prefix}r:').
-- Returns [session, {registration fields}] pairs, flat.
-- Atomically: expired leases go back to `rdue` first, and each session taken
-- moves from `rdue` to `rleased`, so no two replicas check one session at
-- once. A session whose registration is gone or ended is dropped.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, s in ipairs(expired) do
  redis.call('ZREM', KEYS[2], s)
  redis.call('ZADD', KEYS[1], ARGV[1], s)
end
local out = {}
local ss = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, s in ipairs(ss) do
  redis.call('ZREM', KEYS[1], s)
  local key = ARGV[4] .. s
  if redis.call('HGET', key, 'state') == 'active' then
    redis.call('ZADD', KEYS[2], ARGV[3], s)
    table.insert(out, s)
    table.insert(out, redis.call('HGETALL', key))
  end
end
return out
