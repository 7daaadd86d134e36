-- Issue 24: access keys as the API credential. Existing keys keep working
-- unchanged: enabled, never used, never rerolled, no rate limit of their own.
-- enabled: 1 or 0 (BIGINT on both stores: the one integer sqlx's Any driver reads from both).
ALTER TABLE accesskeys ADD COLUMN enabled BIGINT NOT NULL DEFAULT 1;
-- Requests the key authenticated, added in batches (never a write per request).
ALTER TABLE accesskeys ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accesskeys ADD COLUMN tm_rerolled BIGINT;
-- The secret replaced by the last reroll, working until old_token_expire.
ALTER TABLE accesskeys ADD COLUMN old_token_hash TEXT;
ALTER TABLE accesskeys ADD COLUMN old_token_expire BIGINT;
CREATE INDEX accesskeys_by_old_hash ON accesskeys (old_token_hash);
-- The key's own budget (requests per second, burst); NULL: none.
ALTER TABLE accesskeys ADD COLUMN rate_limit_rate REAL;
ALTER TABLE accesskeys ADD COLUMN rate_limit_burst BIGINT;
