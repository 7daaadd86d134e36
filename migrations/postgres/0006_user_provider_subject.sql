-- The provider's `sub` a provider user is bound to at first sign-in: a later
-- sign-in under the same user name with another `sub` is another account and
-- is refused. NULL for local users, and for provider users recorded before
-- this column existed until their next sign-in binds them.
ALTER TABLE users ADD COLUMN provider_subject TEXT;
