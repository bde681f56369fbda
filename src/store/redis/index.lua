-- Index helpers, shared by the scripts that count or list an index whose
-- records may have expired or moved on; those scripts start with this text.
--
-- trim(index, prefix, field, want): drops ids from the front of `index`
-- while their record is gone (expired) or its `field` is no longer `want`.
-- The index must be scored by the records' expiries (the very numbers given
-- to PEXPIREAT, which `expire` keeps true): once the front's record is
-- alive, every later one is too, so what is left is exactly the live ones.
--
-- newest(index, prefix, field, want, after_at, after_id, limit): the ids in
-- `index` whose record's `field` is `want`, newest received first (then by
-- id, as `newest_first`), the first `limit` of them that come after the
-- cursor (`after_at`, `after_id`; `after_at` '' for none), as a flat list
-- of [id, received_at] pairs. Drops the ids whose record is not. O(index):
-- it reads every record's `received_at`, because the index is ordered by
-- expiry, not receipt.
local function trim(index, prefix, field, want)
  while true do
    local first = redis.call('ZRANGE', index, 0, 0)[1]
    if not first or redis.call('HGET', prefix .. first, field) == want then return end
    redis.call('ZREM', index, first)
  end
end

local function newest(index, prefix, field, want, after_at, after_id, limit)
  local at = tonumber(after_at)
  local rows = {}
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local f = redis.call('HMGET', prefix .. id, field, 'received_at')
    if f[1] == want then
      local received = tonumber(f[2]) or 0
      if not at or received < at or (received == at and id > after_id) then
        table.insert(rows, {received, id, f[2] or '0'})
      end
    else
      redis.call('ZREM', index, id)
    end
  end
  table.sort(rows, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return a[2] < b[2]
  end)
  local out = {}
  for i = 1, math.min(#rows, tonumber(limit)) do
    table.insert(out, rows[i][2])
    table.insert(out, rows[i][3])
  end
  return out
end
