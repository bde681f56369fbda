-- Take a probe nonce, once.
-- KEYS: 1 the nonce's key p:{nonce}.
-- ARGV: 1 now (unix ms).
-- Returns 1 when the nonce was kept and had not expired by ARGV[1], else 0.
-- The key goes either way, in the same step as the read, so of any number
-- of takes on any replicas at most one gets 1.
local exp = redis.call('GET', KEYS[1])
if not exp then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(exp) > tonumber(ARGV[1]) then return 1 end
return 0
