//! What a verified token says: its claims, and the shared parts of the
//! identity every request presenting it carries. Apart from [`super::jwt`]
//! so that the verified-token cache ([`super::cache`]) and the keys that
//! fill it depend on it, not on each other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The claims of every token authgate issues. Kept small on purpose: the
/// user's profile is not in the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Username.
    pub sub: String,
    /// Roles at issue time.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// Unique token id, for logout.
    pub jti: String,
    /// The user's credential generation: a password change or removal makes
    /// every token of an older generation invalid.
    pub r#gen: i64,
}

/// A token that passed the full check, as the verified-token cache keeps
/// it: the claims, and the identity parts that every request presenting
/// the token shares instead of copying them.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's claims.
    pub claims: Claims,
    /// `sub`, shared.
    pub user: Arc<str>,
    /// `roles`, shared.
    pub roles: Arc<[String]>,
    /// `sub` as the `X-Auth-User` value.
    pub user_value: Option<http::HeaderValue>,
    /// `roles` as the `X-Auth-Roles` value.
    pub roles_value: Option<http::HeaderValue>,
}

impl VerifiedToken {
    pub(crate) fn new(claims: Claims) -> Self {
        VerifiedToken {
            user: Arc::from(claims.sub.as_str()),
            roles: Arc::from(claims.roles.as_slice()),
            user_value: crate::names::header_value(&claims.sub),
            roles_value: crate::names::roles_header_value(&claims.roles),
            claims,
        }
    }
}
