-- Failed-login throttling, shared by every gateway on the store.
CREATE TABLE login_failures (
    subject TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL
);
