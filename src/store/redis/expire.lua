-- expire(key, id, ttl, keep_finished, keep_dead, dead, unconfirmed, resolved):
-- the one rule for how long a delivery record lives, shared by the scripts
-- that change a record's state (they start with this text). Call it after
-- writing the new state. `ttl` is the dedupe TTL; `keep_finished` and
-- `keep_dead` are store.keep_finished and store.keep_dead (all ms).
-- A record lives:
--   pending: `ttl` past its deadline;
--   delivered: `keep_finished` past its receipt;
--   resolved: `keep_finished` past its resolution (`resolved_at`);
--   dead, or delivered with its order watch ended unconfirmed: `keep_dead`
--   past its receipt, and a dead one at least `ttl` past its death
--   (`died_at`).
-- With an order watch, also at least `ttl` past its next (or last) check,
-- so the record cannot expire while the watch runs, nor the unconfirmed
-- incident before it could be seen.
-- The expiry is written to PEXPIREAT and as the record's score in the index
-- of its state: `dead` for a dead record, `unconfirmed` for an open
-- unconfirmed one, `resolved` (when given) for a resolved one. `trim`
-- relies on those scores being the records' real expiries. The record's
-- lookup indexes (lookup.lua, joined in front of this text) are made to
-- hold it and to live as long: so a record claimed by an earlier version
-- is in them from its first change by this one.
-- Returns the expiry (unix ms).
local function expire(key, id, ttl, keep_finished, keep_dead, dead, unconfirmed, resolved)
  local f = redis.call('HMGET', key, 'state', 'received_at', 'deadline_at', 'died_at', 'w_state', 'w_next',
    'resolved_at', 'session_id', 'reference')
  local received = tonumber(f[2]) or 0
  ttl = tonumber(ttl)
  local at
  if f[1] == 'pending' then
    at = (tonumber(f[3]) or received) + ttl
  elseif f[1] == 'dead' then
    at = math.max(received + tonumber(keep_dead), (tonumber(f[4]) or received) + ttl)
  elseif f[1] == 'resolved' then
    at = (tonumber(f[7]) or received) + tonumber(keep_finished)
  elseif f[5] == 'unconfirmed' or f[1] == 'released' then
    at = received + tonumber(keep_dead)
  else
    at = received + tonumber(keep_finished)
  end
  if f[5] then at = math.max(at, (tonumber(f[6]) or 0) + ttl) end
  redis.call('PEXPIREAT', key, at)
  if f[1] == 'dead' then redis.call('ZADD', dead, at, id) end
  if f[5] == 'unconfirmed' and f[1] ~= 'resolved' and f[1] ~= 'released' then redis.call('ZADD', unconfirmed, at, id) end
  if f[1] == 'resolved' and resolved then redis.call('ZADD', resolved, at, id) end
  if f[8] then lookup_keep(lookup_prefix(key, id), id, f[8], f[9], received, at) end
  return at
end
