-- Stats: the gauges. Runs after index.lua and trim_dead.lua (mod.rs joins
-- the three).
-- KEYS: 1 pending, 2 dead_by_expiry, 3 the legacy dead index, 4 unconfirmed.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 now (unix ms).
-- Returns [pending count, dead count, unconfirmed count, oldest pending
-- score or false, received_at of the first dead record or false, and of
-- the first unconfirmed one or false].
-- Atomically: the dead and unconfirmed indexes are trimmed and counted in one
-- step, so neither count includes a record that has expired (nor a resolved
-- one: resolving takes it out of both). They are scored by expiry, which
-- runs with receipt (`expire`), so the first of each is its oldest.
trim_dead(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
trim(KEYS[4], ARGV[1], 'w_state', 'unconfirmed')
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local function first_received(index)
  local id = redis.call('ZRANGE', index, 0, 0)[1]
  if not id then return false end
  return redis.call('HGET', ARGV[1] .. id, 'received_at') or false
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[4]),
  oldest[2] or false, first_received(KEYS[2]), first_received(KEYS[4])}
