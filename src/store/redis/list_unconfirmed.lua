-- List unconfirmed: up to ARGV[2] deliveries whose order watch ended
-- unconfirmed, after the cursor (ARGV[3], ARGV[4]), newest received first
-- (then by id, as `newest_first`), as [id, received_at] pairs. Runs after
-- index.lua (mod.rs joins the two).
-- KEYS: 1 unconfirmed.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 limit, 3 the cursor's
--       received_at ('' for none), 4 the cursor's id.
-- Returns a flat list of id, received_at.
-- Atomically: trimmed and read in one step, so the listing agrees with the
-- count in stats.lua. O(unconfirmed) (see `newest`).
trim(KEYS[1], ARGV[1], 'w_state', 'unconfirmed')
return newest(KEYS[1], ARGV[1], 'w_state', 'unconfirmed', ARGV[3], ARGV[4], ARGV[2])
