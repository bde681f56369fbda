-- Replay: queue a dead delivery again. Runs after lookup.lua and
-- expire.lua (mod.rs joins the three).
-- KEYS: 1 the record d:{id}, 2 due, 3 pending, 4 dead_by_expiry,
--       5 unconfirmed.
-- ARGV: 1 id, 2 now (due at), 3 the new deadline_at, 4 dedupe TTL (ms),
--       5 keep_finished (ms), 6 keep_dead (ms).
-- Returns 'queued', 'missing', or the state the record is in when not dead.
-- Atomically: only a dead record is requeued, and it leaves the dead index
-- in the same step it enters `due` and `pending`.
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'dead' then return st end
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_at', ARGV[2], 'deadline_at', ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'received_at'), ARGV[1])
expire(KEYS[1], ARGV[1], ARGV[4], ARGV[5], ARGV[6], KEYS[4], KEYS[5])
return 'queued'
