-- List dead: the ids of up to ARGV[3] dead deliveries, newest received first
-- (then by id, as `newest_first`). Runs after trim_dead.lua (mod.rs joins
-- the two).
-- KEYS: 1 dead_by_expiry, 2 the legacy dead index.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 now (unix ms), 3 limit.
-- Returns a list of ids.
-- Atomically: trimmed and read in one step, so the listing agrees with the
-- count. The index is ordered by expiry, not receipt, so this reads every
-- live dead record's `received_at`: O(dead), like the in-process stores.
trim_dead(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local rows = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'state', 'received_at')
  if f[1] == 'dead' then
    table.insert(rows, {tonumber(f[2]) or 0, id})
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
table.sort(rows, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(#rows, tonumber(ARGV[3])) do out[i] = rows[i][2] end
return out
