-- Finish check: record what a Read Session check decided.
-- KEYS: 1 the registration r:{session}, 2 rdue, 3 rleased.
-- ARGV: 1 session id, 2 'again' | 'ended', 3 checks made, 4 next check at
--       (again), 5 last error (again) or outcome (ended), 6 when an ended
--       registration expires.
-- Returns 1 (applied) or 0 (the registration is no longer active).
-- Atomically: the lease is released and the registration either rescheduled
-- or ended in one step; one that ended meanwhile (its callback came) stays
-- ended.
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
if ARGV[2] == 'again' then
  redis.call('HSET', KEYS[1], 'checks', ARGV[3], 'next_at', ARGV[4], 'last_error', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'checks', ARGV[3], 'state', 'ended', 'outcome', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[6])
end
return 1
