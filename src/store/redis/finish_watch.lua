-- Finish watch: record what an order-watch check decided. Runs after
-- lookup.lua and expire.lua (mod.rs joins the three).
-- KEYS: 1 the record d:{id}, 2 wdue, 3 wleased, 4 unconfirmed, 5 due,
--       6 pending, 7 delivered, 8 dead_by_expiry, 9 released (scored by
--       expiry, as `resolved`).
-- ARGV: 1 id, 2 'again' | 'confirmed' | 'unconfirmed' | 'redeliver' |
--       'klarna_failing' | 'release' | 'released' | 'release_failed', 3 checks made, 4 next check at (again,
--       redeliver, klarna_failing), 5 the check's error ('' for none),
--       6 now (redeliver: when the delivery is due; klarna_failing: since
--       when Klarna has failed), 7 dedupe TTL (ms), 8 keep_finished (ms),
--       9 keep_dead (ms).
-- Returns 1 (applied) or 0 (the record is gone or no longer watching).
-- Atomically: the lease is released and the watch rescheduled or ended in
-- one step. A redelivery makes the delivery pending in the same step, in
-- `due` and `pending` as a claimed one is (and out of `delivered` and the
-- dead index), so `take_due` hands it out. It happens once: a second
-- redeliver (from a replica whose lease expired meanwhile) only
-- reschedules the check. A watch that ended meanwhile stays ended.
local id = ARGV[1]
redis.call('ZREM', KEYS[3], id)
-- A watch `releasing` (its DELETE recorded, maybe sent) ends only as
-- released or release_failed, or is rescheduled by another 'release'.
local w_state = redis.call('HGET', KEYS[1], 'w_state')
local kind = ARGV[2]
local release = kind == 'release' or kind == 'released' or kind == 'release_failed'
if w_state ~= 'watching' and not (w_state == 'releasing' and release) then
  redis.call('ZREM', KEYS[2], id)
  return 0
end
redis.call('HSET', KEYS[1], 'w_checks', ARGV[3])
-- Only a check that Klarna failed keeps (or starts) its failing time.
if kind == 'klarna_failing' then
  redis.call('HSET', KEYS[1], 'w_next', ARGV[4], 'w_error', ARGV[5], 'w_failing_since', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  expire(KEYS[1], id, ARGV[7], ARGV[8], ARGV[9], KEYS[8], KEYS[4])
  return 1
end
redis.call('HDEL', KEYS[1], 'w_failing_since')
if kind == 'release' then
  redis.call('HSET', KEYS[1], 'w_state', 'releasing', 'w_next', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], id)
elseif kind == 'released' then
  redis.call('HSET', KEYS[1], 'state', 'released', 'w_state', 'unconfirmed', 'w_error', '')
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[7], id)
elseif kind == 'release_failed' then
  redis.call('HSET', KEYS[1], 'w_state', 'unconfirmed', 'w_error', ARGV[5])
  redis.call('ZREM', KEYS[2], id)
elseif kind == 'again' then
  redis.call('HSET', KEYS[1], 'w_next', ARGV[4], 'w_error', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[4], id)
elseif kind == 'confirmed' then
  redis.call('HSET', KEYS[1], 'w_state', 'confirmed', 'w_error', '')
  redis.call('ZREM', KEYS[2], id)
elseif kind == 'unconfirmed' then
  redis.call('HSET', KEYS[1], 'w_state', 'unconfirmed')
  -- A check that failed without a reason of its own keeps the last one.
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'w_error', ARGV[5]) end
  redis.call('ZREM', KEYS[2], id)
else
  redis.call('HSET', KEYS[1], 'w_next', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  local f = redis.call('HMGET', KEYS[1], 'w_redelivered', 'state', 'received_at')
  if f[1] ~= '1' then
    redis.call('HSET', KEYS[1], 'w_redelivered', 1)
    -- A record pending already is queued already.
    if f[2] ~= 'pending' then
      redis.call('HSET', KEYS[1], 'state', 'pending', 'next_at', ARGV[6])
      redis.call('ZREM', KEYS[7], id)
      redis.call('ZREM', KEYS[8], id)
      redis.call('ZADD', KEYS[5], ARGV[6], id)
      redis.call('ZADD', KEYS[6], f[3], id)
    end
  end
end
local at = expire(KEYS[1], id, ARGV[7], ARGV[8], ARGV[9], KEYS[8], KEYS[4])
if kind == 'released' then redis.call('ZADD', KEYS[9], at, id) end
return 1
