-- Access-key scopes and last use. Existing keys keep working unchanged:
-- roles NULL follows the owner's roles, empty methods and path_prefixes
-- allow every method and path, tm_last_used NULL means never used.
-- Lists are comma-separated (roles, methods and prefixes hold no comma).
ALTER TABLE accesskeys ADD COLUMN roles TEXT;
ALTER TABLE accesskeys ADD COLUMN methods TEXT NOT NULL DEFAULT '';
ALTER TABLE accesskeys ADD COLUMN path_prefixes TEXT NOT NULL DEFAULT '';
ALTER TABLE accesskeys ADD COLUMN tm_last_used BIGINT;
