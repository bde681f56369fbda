-- Register: schedule a session for the Read Session fallback.
-- KEYS: 1 the registration r:{session}, 2 rdue.
-- ARGV: 1 session id, 2 route, 3 reference, 4 registered_at, 5 next check at,
--       6 when the registration expires.
-- Returns 1 (new) or 0 (already registered, active or ended).
-- Atomically: the existence check and the write are one step, so a session
-- is registered and scheduled once however many replicas are asked.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'route', ARGV[2], 'reference', ARGV[3], 'registered_at', ARGV[4], 'checks', 0,
  'next_at', ARGV[5], 'state', 'active')
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
