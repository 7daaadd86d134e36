-- Users, access keys, one-time keys, revoked tokens and the change log.
-- Times are unix seconds. Hashes are lower-case hex.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    ha1 TEXT NOT NULL,
    ha1_realm TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '',
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE accesskeys (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL UNIQUE,
    token_prefix TEXT NOT NULL,
    tm_expire BIGINT NOT NULL,
    tm_create BIGINT NOT NULL,
    tm_update BIGINT NOT NULL,
    tm_delete BIGINT
);
CREATE INDEX accesskeys_by_user ON accesskeys (username, id);

CREATE TABLE onetime_keys (
    key_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX onetime_keys_by_user ON onetime_keys (username, created_at);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE changes (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
