-- ACME account and certificates shared by replicas (PostgreSQL); SQLite
-- gateways keep them in server.tls.acme.cache_dir, the table stays empty.
CREATE TABLE acme_cache (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
