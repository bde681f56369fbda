-- Lookup indexes, shared by the scripts that record or change a delivery
-- (they start with this text; expire.lua's `expire` calls `lookup_keep`).
-- `by_session:{session id}` and `by_reference:{reference}` are sorted sets
-- of the ids of one session's or one merchant reference's records, whatever
-- their state, scored by receipt: listing by either reads them (list.rs)
-- instead of every record. A record without a reference ('') is indexed by
-- session only; a listing never asks for an empty reference.
--
-- lookup_keep(prefix, id, session, reference, received, at, cutoff): puts
-- `id` in both indexes and makes each live at least until `at`, the
-- record's expiry (the very number given to PEXPIREAT), so an index never
-- expires before a record it holds. An id whose record expired is skipped
-- by listings, and goes with its index's expiry or, given `cutoff` (a
-- claim's: `dedupe_ttl` before now, a younger record cannot have expired),
-- when an index that already held ids drops up to 4 of its oldest ids
-- received at or before it whose record is gone or now belongs to another
-- reference (claimed again). So an index that never expires (a reference
-- every record shares) sheds what expired about as fast as it grows.

-- lookup_prefix(key, id): the key prefix, from a record's key
-- (`{prefix}d:{id}`).
local function lookup_prefix(key, id)
  return string.sub(key, 1, #key - #id - 2)
end

local function lookup_keys(prefix, session, reference)
  local keys = {{prefix .. 'by_session:' .. session, 'session_id', session}}
  if reference and reference ~= '' then
    table.insert(keys, {prefix .. 'by_reference:' .. reference, 'reference', reference})
  end
  return keys
end

local function lookup_keep(prefix, id, session, reference, received, at, cutoff)
  local now
  for _, k in ipairs(lookup_keys(prefix, session, reference)) do
    local new = redis.call('EXISTS', k[1]) == 0
    redis.call('ZADD', k[1], received, id)
    if new then
      redis.call('PEXPIREAT', k[1], at)
    else
      if not now then
        now = redis.call('TIME')
        now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
      end
      local left = redis.call('PTTL', k[1])
      if left < 0 or now + left < tonumber(at) then redis.call('PEXPIREAT', k[1], at) end
      if cutoff then
        for _, old in ipairs(redis.call('ZRANGEBYSCORE', k[1], '-inf', cutoff, 'LIMIT', 0, 4)) do
          if redis.call('HGET', prefix .. 'd:' .. old, k[2]) ~= k[3] then redis.call('ZREM', k[1], old) end
        end
      end
    end
  end
end
