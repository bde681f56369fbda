-- expire(key, id, ttl, dead, unconfirmed): the one rule for how long a
-- delivery record lives, shared by the scripts that change a record's state
-- (they start with this text). Call it after writing the new state.
-- A record lives `ttl` (the dedupe TTL, ms) past: its deadline while
-- pending, its death (`died_at`) while dead, its receipt once delivered.
-- With an order watch, also at least `ttl` past its next (or last) check,
-- so the record cannot expire while the watch runs, nor the unconfirmed
-- incident before it could be seen.
-- The expiry is written to PEXPIREAT and, for a dead record, as its score in
-- `dead`, for an unconfirmed one, as its score in `unconfirmed`: `trim`
-- relies on those scores being the records' real expiries. The record's
-- lookup indexes (lookup.lua, joined in front of this text) are made to
-- hold it and to live as long: so a record claimed by an earlier version
-- is in them from its first change by this one.
-- Returns the expiry (unix ms).
local function expire(key, id, ttl, dead, unconfirmed)
  local f = redis.call('HMGET', key, 'state', 'received_at', 'deadline_at', 'died_at', 'w_state', 'w_next',
    'session_id', 'reference')
  local received = tonumber(f[2]) or 0
  local base = received
  if f[1] == 'pending' then
    base = tonumber(f[3]) or received
  elseif f[1] == 'dead' then
    base = tonumber(f[4]) or received
  end
  local at = base + tonumber(ttl)
  if f[5] then at = math.max(at, (tonumber(f[6]) or 0) + tonumber(ttl)) end
  redis.call('PEXPIREAT', key, at)
  if f[1] == 'dead' then redis.call('ZADD', dead, at, id) end
  if f[5] == 'unconfirmed' then redis.call('ZADD', unconfirmed, at, id) end
  if f[7] then lookup_keep(lookup_prefix(key, id), id, f[7], f[8], received, at) end
  return at
end
