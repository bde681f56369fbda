-- trim_dead(dead, legacy, prefix, now): shared by the scripts that count or
-- list dead deliveries, which start with index.lua's text and this file's.
-- It moves the legacy index (`dead`, scored by receipt, of any type) into
-- `dead_by_expiry`, then drops ids from the front of it while their record is
-- gone (expired) or no longer dead (`trim`: scores are the records'
-- expiries, so once the front's record is alive, every later one is too).
-- Runs inside the calling script, so the caller's count or listing never
-- includes an expired record.
local function trim_dead(dead, legacy, prefix, now)
  local kind = redis.call('TYPE', legacy)['ok']
  if kind == 'zset' or kind == 'set' then
    local ids
    if kind == 'zset' then ids = redis.call('ZRANGE', legacy, 0, -1) else ids = redis.call('SMEMBERS', legacy) end
    for _, id in ipairs(ids) do
      local key = prefix .. id
      if redis.call('HGET', key, 'state') == 'dead' then
        local left = redis.call('PTTL', key)
        if left >= 0 then
          redis.call('ZADD', dead, tonumber(now) + left, id)
        else
          redis.call('ZADD', dead, '+inf', id)
        end
      end
    end
    redis.call('DEL', legacy)
  end
  trim(dead, prefix, 'state', 'dead')
end
