-- A match channel becomes read-only once its match has ended: the lobby's
-- results consumer sets ended_at_ms from the match's result. NULL: open (and
-- always NULL for public and direct channels).
ALTER TABLE chat_channels ADD COLUMN ended_at_ms BIGINT;
