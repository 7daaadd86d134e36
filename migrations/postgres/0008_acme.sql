-- ACME account and certificates shared by replicas: the account (its key
-- is a secret, like the password hashes beside it), each certificate with
-- its key, and the http-01 answers of an order in progress, so that the
-- replica the CA reaches can answer for the one that ordered.
CREATE TABLE acme_cache (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
