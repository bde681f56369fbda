-- Index helpers, shared by the scripts that count or list an index whose
-- records may have expired or moved on; those scripts start with this text.
--
-- trim(index, prefix, field, want): drops ids from the front of `index`
-- while their record is gone (expired) or its `field` is no longer `want`.
-- The index must be scored by the records' expiries (the very numbers given
-- to PEXPIREAT, which `expire` keeps true): once the front's record is
-- alive, every later one is too, so what is left is exactly the live ones.
--
-- newest(index, prefix, field, want, offset, limit): the ids in `index`
-- whose record's `field` is `want`, newest received first (then by id, as
-- `newest_first`), `limit` of them after skipping `offset`. Drops the ids
-- whose record is not. O(index): it reads every record's `received_at`,
-- because the index is ordered by expiry, not receipt.
local function trim(index, prefix, field, want)
  while true do
    local first = redis.call('ZRANGE', index, 0, 0)[1]
    if not first or redis.call('HGET', prefix .. first, field) == want then return end
    redis.call('ZREM', index, first)
  end
end

local function newest(index, prefix, field, want, offset, limit)
  local rows = {}
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local f = redis.call('HMGET', prefix .. id, field, 'received_at')
    if f[1] == want then
      table.insert(rows, {tonumber(f[2]) or 0, id})
    else
      redis.call('ZREM', index, id)
    end
  end
  table.sort(rows, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return a[2] < b[2]
  end)
  local out = {}
  local first = tonumber(offset) + 1
  for i = first, math.min(#rows, first + tonumber(limit) - 1) do table.insert(out, rows[i][2]) end
  return out
end
