-- List unconfirmed: the ids of up to ARGV[2] deliveries whose order watch
-- ended unconfirmed, after the first ARGV[3], newest received first (then by
-- id, as `newest_first`). Runs after index.lua (mod.rs joins the two).
-- KEYS: 1 unconfirmed.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 limit, 3 offset.
-- Returns a list of ids.
-- Atomically: trimmed and read in one step, so the listing agrees with the
-- count in stats.lua. O(unconfirmed) (see `newest`).
trim(KEYS[1], ARGV[1], 'w_state', 'unconfirmed')
return newest(KEYS[1], ARGV[1], 'w_state', 'unconfirmed', ARGV[3], ARGV[2])
