//! JWTs: signing and verifying with the configured keys ([`jwt`]), tokens
//! of external identity providers checked against their JWK sets
//! ([`jwks`]), the bounded cache of verified tokens ([`cache`]), and
//! signed short-lived browser state ([`state`]).
//! It depends on nothing else in the crate but [`crate::names`], so the
//! config can check keys with it and the credential cache can reach its
//! cache through [`TokenRevocations`].

pub mod cache;
pub mod claims;
pub mod jwks;
pub mod jwt;
pub mod state;

/// A cache of verified tokens: revocations read from the store's change
/// log reach it through this.
pub trait TokenRevocations: Send + Sync {
    /// Drops every cached token of `username` (password change, removal).
    fn forget_user(&self, username: &str);
    /// Drops the cached token with id `jti` (logout).
    fn forget_token_id(&self, jti: &str);
}
