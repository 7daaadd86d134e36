-- Users signed in through an external OpenID Connect provider: the
-- provider's name from [[oidc]]; NULL for local users (password, one-time key).
ALTER TABLE users ADD COLUMN provider TEXT;
