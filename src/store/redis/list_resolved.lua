-- List resolved: up to ARGV[2] resolved deliveries after the cursor
-- (ARGV[3], ARGV[4]), newest received first (then by id, as
-- `newest_first`), as [id, received_at] pairs. Runs after index.lua (mod.rs
-- joins the two).
-- KEYS: 1 resolved.
-- ARGV: 1 the record key prefix ('{prefix}d:'), 2 limit, 3 the cursor's
--       received_at ('' for none), 4 the cursor's id, 5 the state the
--       index holds ('resolved' or 'released', whose index is alike).
-- Returns a flat list of id, received_at.
-- Atomically: trimmed and read in one step. O(resolved) (see `newest`).
trim(KEYS[1], ARGV[1], 'state', ARGV[5])
return newest(KEYS[1], ARGV[1], 'state', ARGV[5], ARGV[3], ARGV[4], ARGV[2])
