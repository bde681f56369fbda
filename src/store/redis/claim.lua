-- Claim: record a callback once, and queue it. Runs after lookup.lua
-- (mod.rs joins the two).
-- KEYS: 1 the record d:{id}, 2 due, 3 pending, 4 the registration r:{session},
--       5 rdue, 6 rleased, 7 delivered, 8 dead_by_expiry, 9 unconfirmed,
--       10 wdue, 11 wleased.
-- ARGV: 1 id, 2 cutoff (a delivered record received at or before it no longer
--       counts), 3 the record's expiry (unix ms), 4 route, 5 reference,
--       6 session id, 7 authorization token, 8 source, 9 received_at,
--       10 payload, 11 arrival uri ('' for none), 12 next_at, 13 deadline_at,
--       14 when an ended registration expires.
-- Returns 1 (recorded) or 0 (duplicate).
-- Atomically: the dedupe check, the record, its place in `due` and `pending`,
-- and ending an active registration of the session happen together or not at
-- all, so two replicas racing on one callback get one 1. Recording (first
-- time, or again once the old record is gone) also takes the id out of the
-- dead, delivered, unconfirmed and order-watch indexes: an expired or
-- replaced record may have left it there, and it must not be listed,
-- counted or watched twice. The record joins the lookup indexes of its
-- session and reference (leaving the old reference's, when replaced).
local prefix = lookup_prefix(KEYS[1], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'state')
if st then
  if st ~= 'delivered' then return 0 end
  if tonumber(redis.call('HGET', KEYS[1], 'received_at')) > tonumber(ARGV[2]) then return 0 end
  local old = redis.call('HGET', KEYS[1], 'reference')
  if old and old ~= ARGV[5] and old ~= '' then redis.call('ZREM', prefix .. 'by_reference:' .. old, ARGV[1]) end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('ZREM', KEYS[9], ARGV[1])
redis.call('ZREM', KEYS[10], ARGV[1])
redis.call('ZREM', KEYS[11], ARGV[1])
redis.call('HSET', KEYS[1], 'route', ARGV[4], 'reference', ARGV[5], 'session_id', ARGV[6], 'token', ARGV[7],
  'source', ARGV[8], 'received_at', ARGV[9], 'payload', ARGV[10], 'arrival_uri', ARGV[11], 'state', 'pending',
  'attempts', 0, 'next_at', ARGV[12], 'deadline_at', ARGV[13])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[12], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[1])
lookup_keep(prefix, ARGV[1], ARGV[6], ARGV[5], ARGV[9], ARGV[3], ARGV[2])
if redis.call('HGET', KEYS[4], 'state') == 'active' then
  redis.call('HSET', KEYS[4], 'state', 'ended', 'outcome', ARGV[8])
  redis.call('ZREM', KEYS[5], ARGV[6])
  redis.call('ZREM', KEYS[6], ARGV[6])
  redis.call('PEXPIREAT', KEYS[4], ARGV[14])
end
return 1
