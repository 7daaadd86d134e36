-- One-time keys are bounded per client address (onetimekey.max_per_address):
-- every key issued, for a known user or not, is one row here until it is
-- used or expires. Keys for unknown names live only here, never in
-- onetime_keys, so they take no room in the table real users' keys share.
CREATE TABLE onetime_key_issues (
    key_hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX onetime_key_issues_by_address ON onetime_key_issues (address, expires_at);

-- The address a key was asked from: a user's oldest keys are dropped only
-- among those asked from the same address, so no address pushes out
-- another's key.
ALTER TABLE onetime_keys ADD COLUMN address TEXT NOT NULL DEFAULT '';
