-- Stats: the gauges. Runs after trim_dead.lua (mod.rs joins the two).
-- KEYS: 1 pending, 2 dead_by_expiry, 3 the legacy dead index.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 now (unix ms).
-- Returns [pending count, dead count, oldest pending score or false].
-- Atomically: the dead index is trimmed and counted in one step, so the count
-- never includes a record that has expired.
trim_dead(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), oldest[2] or false}
