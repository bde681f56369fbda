-- Resolve: an operator closes a failure by hand. Runs after expire.lua
-- (mod.rs joins the two).
-- KEYS: 1 the record d:{id}, 2 dead_by_expiry, 3 unconfirmed, 4 resolved,
--       5 delivered, 6 released.
-- ARGV: 1 id, 2 resolved_at (unix ms), 3 the note, 4 dedupe TTL (ms),
--       5 keep_finished (ms), 6 keep_dead (ms).
-- Returns 'resolved', 'missing', or where the record stands instead, as
-- '{state}:{w_state}' (w_state '' when it has no watch).
-- Atomically: only a dead record, or a delivered one whose order watch
-- ended unconfirmed (`Delivery::resolvable`), is resolved, and it leaves the
-- dead, unconfirmed and delivered indexes in the same step it enters
-- `resolved`, scored by its new expiry (`keep_finished` past now). The
-- record stays, so a callback for it is still a duplicate.
local f = redis.call('HMGET', KEYS[1], 'state', 'w_state')
if not f[1] then return 'missing' end
if not (f[1] == 'dead' or f[1] == 'released' or (f[1] == 'delivered' and f[2] == 'unconfirmed')) then
  return f[1] .. ':' .. (f[2] or '')
end
redis.call('HSET', KEYS[1], 'state', 'resolved', 'resolved_at', ARGV[2], 'resolve_note', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
expire(KEYS[1], ARGV[1], ARGV[4], ARGV[5], ARGV[6], KEYS[2], KEYS[3], KEYS[4])
return 'resolved'
