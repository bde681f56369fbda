-- Finish: record the outcome of an attempt on a leased delivery. Runs after
-- lookup.lua and expire.lua (mod.rs joins the three).
-- KEYS: 1 the record d:{id}, 2 leased, 3 due, 4 pending, 5 dead_by_expiry,
--       6 delivered, 7 unconfirmed, 8 wdue.
-- ARGV: 1 id, 2 'delivered' | 'retry' | 'dead', 3 attempts, 4 delivered_at,
--       next_at or now (for dead), 5 last error, 6 dedupe TTL (ms),
--       7 this replica's lease token ('' if it holds none), 8 when the first
--       order-watch check is due ('' for no watch; delivered only), 9 the
--       attempt, as one line of JSON, 10 how many attempts the log keeps,
--       11 keep_finished (ms), 12 keep_dead (ms).
-- Returns 1 (applied) or 0 (not pending, or a retry or dead outcome from a
-- replica that no longer holds the lease).
-- Atomically: the outcome, releasing the lease, moving the id between the
-- indexes, starting its order watch and logging the attempt happen in one
-- step, so the log holds exactly the attempts whose outcome counted. The
-- log (`attempt_log`) is JSON lines, oldest first, cut from the front to
-- the latest ARGV[10]; it lives and expires with the record. A delivered
-- outcome applies whoever holds the lease (the upstream took it); a retry or
-- dead outcome only from the lease holder. A delivery already watched (a
-- redelivery) keeps its watch, whatever the outcome.
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'pending' then redis.call('ZREM', KEYS[2], ARGV[1]); return 0 end
local mine = redis.call('HGET', KEYS[1], 'lease') == ARGV[7]
if ARGV[2] ~= 'delivered' and not mine then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'lease')
local log = redis.call('HGET', KEYS[1], 'attempt_log')
if log and log ~= '' then log = log .. '\n' .. ARGV[9] else log = ARGV[9] end
local lines = select(2, string.gsub(log, '\n', '')) + 1
while lines > tonumber(ARGV[10]) do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HSET', KEYS[1], 'attempt_log', log)
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'state', 'delivered', 'attempts', ARGV[3], 'delivered_at', ARGV[4], 'last_error', '')
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[6], redis.call('HGET', KEYS[1], 'received_at'), ARGV[1])
  if ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[1], 'w_state') == 0 then
    redis.call('HSET', KEYS[1], 'w_state', 'watching', 'w_started', ARGV[4], 'w_next', ARGV[8], 'w_checks', 0,
      'w_redelivered', 0, 'w_error', '')
    redis.call('ZADD', KEYS[8], ARGV[8], ARGV[1])
  end
elseif ARGV[2] == 'retry' then
  redis.call('HSET', KEYS[1], 'attempts', ARGV[3], 'next_at', ARGV[4], 'last_error', ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return 1
else
  redis.call('HSET', KEYS[1], 'state', 'dead', 'attempts', ARGV[3], 'last_error', ARGV[5], 'died_at', ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
expire(KEYS[1], ARGV[1], ARGV[6], ARGV[11], ARGV[12], KEYS[5], KEYS[7])
return 1
