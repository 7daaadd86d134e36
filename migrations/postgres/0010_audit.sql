-- Issue 27: the audit log. One row per event; never a secret.
-- id: a UUID v7 made when the event happened, so ids sort by time (newest
-- first is ORDER BY id DESC, and the listing pages by id).
-- tm: unix seconds. provider and username: who acted ('' for an anonymous
-- caller or the CLI); target: the user or key acted on ('' when none).
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tm BIGINT NOT NULL,
    provider TEXT NOT NULL,
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT NOT NULL
);
-- The retention purge and `since`.
CREATE INDEX audit_log_by_tm ON audit_log (tm);
-- `user`: events where NAME acted or was acted on.
CREATE INDEX audit_log_by_username ON audit_log (username, id);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
