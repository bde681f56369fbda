-- List dead: up to ARGV[3] dead deliveries after the cursor (ARGV[4],
-- ARGV[5]), newest received first (then by id, as `newest_first`), as
-- [id, received_at] pairs. Runs after index.lua and trim_dead.lua (mod.rs
-- joins the three).
-- KEYS: 1 dead_by_expiry, 2 the legacy dead index.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 now (unix ms), 3 limit,
--       4 the cursor's received_at ('' for none), 5 the cursor's id.
-- Returns a flat list of id, received_at.
-- Atomically: trimmed and read in one step, so the listing agrees with the
-- count. O(dead), like the in-process stores (see `newest`).
trim_dead(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return newest(KEYS[1], ARGV[1], 'state', 'dead', ARGV[4], ARGV[5], ARGV[3])
