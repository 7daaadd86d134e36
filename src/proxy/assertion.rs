//! `X-Auth-Assertion`: a JWT the gateway signs for each authenticated
//! proxied request, so an upstream can check who the caller is even if
//! something other than the gateway reaches it. Signed with the gateway's
//! asymmetric key (verifiable with `/.well-known/jwks.json`), typed
//! `authgate-assertion+jwt` so it is never taken for a login token
//! (RFC 8725 section 3.11), with `aud` per route and a short `exp`. Bound to
//! the request (`htm`, `htu`, `jti`) on demand; otherwise one assertion per
//! caller and audience is reused for the first half of its life.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use dashmap::DashMap;
use http::HeaderValue;
use serde::Serialize;
use tracing::warn;

use crate::auth::Identity;
use crate::config::{AssertionBinding, AssertionConfig};
use crate::routes::Route;
use crate::token::jwt::JwtKeys;

/// The header the assertion travels in.
pub static X_AUTH_ASSERTION: http::HeaderName = http::HeaderName::from_static("x-auth-assertion");

/// The JOSE `typ` of an assertion.
pub const ASSERTION_TYPE: &str = "authgate-assertion+jwt";

/// Reusable assertions kept at most; beyond, the map starts afresh.
const MAX_REUSED: usize = 10_000;

/// The claims of an assertion.
#[derive(Debug, Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    provider: &'a str,
    roles: &'a [String],
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    htm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    htu: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

/// What a reusable assertion was made for, and until when it is reused.
struct Reusable {
    provider: Arc<str>,
    user: Arc<str>,
    roles: Arc<[String]>,
    audience: Arc<str>,
    header: HeaderValue,
    reuse_until: i64,
}

/// Signs assertions for one config snapshot.
pub struct Assertions {
    keys: Arc<JwtKeys>,
    config: AssertionConfig,
    reusable: DashMap<u64, Reusable>,
    hasher: RandomState,
}

impl Assertions {
    /// For `config`, signed with `keys`' signing key (an asymmetric one:
    /// the config refuses `[assertion]` otherwise).
    pub fn new(config: AssertionConfig, keys: Arc<JwtKeys>) -> Self {
        Assertions {
            keys,
            config,
            reusable: DashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// The `X-Auth-Assertion` value for `identity` on `route`: `method`
    /// and `forwarded_path` (the path the upstream receives, no query) and
    /// `request_id` are bound with `bind = "request"`. `None` only if
    /// signing failed (logged).
    pub fn header_for(
        &self,
        identity: &Identity,
        route: &Route,
        method: &http::Method,
        forwarded_path: &str,
        request_id: &HeaderValue,
        now: i64,
    ) -> Option<HeaderValue> {
        let audience = route
            .assertion_audience
            .as_ref()
            .unwrap_or(&self.config.audience);
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(300);
        let (htm, htu, jti) = match self.config.bind {
            AssertionBinding::Request => (
                Some(method.as_str()),
                Some(forwarded_path),
                request_id.to_str().ok(),
            ),
            AssertionBinding::Identity => {
                let slot = self.hasher.hash_one((
                    identity.provider(),
                    identity.user(),
                    &identity.roles,
                    audience,
                ));
                if let Some(kept) = self.reusable.get(&slot)
                    && kept.reuse_until > now
                    && kept.provider == *identity.provider()
                    && kept.user == *identity.user()
                    && kept.roles == identity.roles
                    && kept.audience == *audience
                {
                    return Some(kept.header.clone());
                }
                let header = self.sign(identity, audience, now, ttl, None, None, None)?;
                if self.reusable.len() >= MAX_REUSED {
                    self.reusable.clear();
                }
                self.reusable.insert(
                    slot,
                    Reusable {
                        provider: identity.provider().clone(),
                        user: identity.user().clone(),
                        roles: identity.roles.clone(),
                        audience: audience.clone(),
                        header: header.clone(),
                        // Reused for the first half of its life, so every
                        // assertion an upstream sees has half its ttl left.
                        reuse_until: now.saturating_add(ttl / 2),
                    },
                );
                return Some(header);
            }
        };
        self.sign(identity, audience, now, ttl, htm, htu, jti)
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        identity: &Identity,
        audience: &str,
        now: i64,
        ttl: i64,
        htm: Option<&str>,
        htu: Option<&str>,
        jti: Option<&str>,
    ) -> Option<HeaderValue> {
        let claims = AssertionClaims {
            iss: self.keys.issuer(),
            sub: identity.user(),
            provider: identity.provider(),
            roles: &identity.roles,
            aud: audience,
            iat: now,
            exp: now.saturating_add(ttl),
            htm,
            htu,
            jti,
        };
        match self.keys.sign_typed(ASSERTION_TYPE, &claims) {
            Ok(token) => HeaderValue::try_from(token).ok(),
            Err(err) => {
                warn!(error = %err, "could not sign an identity assertion");
                None
            }
        }
    }
}
