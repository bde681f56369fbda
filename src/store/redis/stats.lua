-- Stats: the gauges. Runs after index.lua and trim_dead.lua (mod.rs joins
-- the three).
-- KEYS: 1 pending, 2 dead_by_expiry, 3 the legacy dead index, 4 unconfirmed.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 now (unix ms).
-- Returns [pending count, dead count, unconfirmed count, oldest pending
-- score or false].
-- Atomically: the dead and unconfirmed indexes are trimmed and counted in one
-- step, so neither count includes a record that has expired.
trim_dead(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
trim(KEYS[4], ARGV[1], 'w_state', 'unconfirmed')
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[4]),
  oldest[2] or false}
