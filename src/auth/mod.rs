//! Authentication and authorization: from a request's credential to an
//! [`Identity`], and from an identity and a route to a [`Permit`].

pub mod accesskey;
pub mod digest;
pub mod extract;
pub mod password;
pub mod throttle;

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::unix_now;
use crate::error::GatewayError;
use crate::routes::{Route, RouteAuth, RouteMatch};
use crate::scope::KeyScope;
use crate::store::Store;
use crate::store::cache::{CredentialCache, KeyFacts, Lookup, UserFacts};
use crate::token::jwks;
use crate::token::jwt::{self, JwtKeys};
use extract::{Credential, CredentialKind};

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A JWT.
    Jwt,
    /// An access key.
    AccessKey,
}

impl AuthMethod {
    /// The `X-Auth-Method` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::AccessKey => "accesskey",
        }
    }
}

/// Who is calling, once a credential was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Username.
    pub user: Arc<str>,
    /// Roles.
    pub roles: Arc<[String]>,
    /// JWT or access key.
    pub method: AuthMethod,
    /// The access key's id, for access keys.
    pub key_id: Option<uuid::Uuid>,
    /// The token's id and expiry, for JWTs (logout needs them).
    pub token: Option<(String, i64)>,
    /// The methods and paths an access key is limited to; `None`: any.
    pub scope: Option<Arc<KeyScope>>,
}

impl Identity {
    /// Whether the caller has role `admin`.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Leave to forward a request by one route: public, or authenticated and
/// authorized for every route its path falls under. Only [`authorize`]
/// makes one, it carries the route it was issued for, and the forwarder
/// takes nothing else, so no code path can forward a request that was not
/// checked, or forward it by a route other than the one that was checked.
#[derive(Debug)]
pub struct Permit<'a> {
    route: &'a Route,
    identity: Option<Identity>,
}

impl<'a> Permit<'a> {
    /// The route the request is forwarded by.
    pub fn route(&self) -> &'a Route {
        self.route
    }

    /// The identity to forward, `None` on public routes.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
}

/// A permit for the routes a request falls under: every one of them public,
/// or an authenticated caller holding, for each route that lists roles, at
/// least one of them.
pub fn authorize<'a>(
    matched: &RouteMatch<'a>,
    identity: Option<Identity>,
) -> Result<Permit<'a>, GatewayError> {
    let route = matched.route;
    if !matched.needs_credential() {
        return Ok(Permit {
            route,
            identity: None,
        });
    }
    let identity = identity.ok_or(GatewayError::AuthenticationRequired)?;
    let lacks_role = matched.routes().any(|route| {
        route.auth == RouteAuth::Required
            && !route.roles.is_empty()
            && !route.roles.iter().any(|role| identity.has_role(role))
    });
    if lacks_role {
        return Err(GatewayError::MissingRole);
    }
    Ok(Permit {
        route,
        identity: Some(identity),
    })
}

/// Refuses a request outside its access key's scope (403 `OUT_OF_SCOPE`):
/// a method the key does not list, or a path some reading of which lies
/// outside the key's prefixes. Requests without a scoped key pass.
pub fn check_scope(
    identity: Option<&Identity>,
    method: &http::Method,
    path: &str,
) -> Result<(), GatewayError> {
    match identity.and_then(|identity| identity.scope.as_deref()) {
        Some(scope) if !scope.allows(method.as_str(), path) => Err(GatewayError::OutOfScope),
        _ => Ok(()),
    }
}

/// `bytes` random bytes from the OS CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `N` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    fill_random(&mut buf);
    buf
}

fn fill_random(buf: &mut [u8]) {
    // The OS RNG failing is not recoverable: the gateway cannot mint secrets.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Checks credentials against the keys, the cache and (on a miss) the store.
pub struct Authenticator {
    jwt: Arc<JwtKeys>,
    external: Vec<Arc<jwks::JwksProvider>>,
    store: Store,
    cache: Arc<CredentialCache>,
}

impl Authenticator {
    /// Ties the pieces together.
    pub fn new(
        jwt: Arc<JwtKeys>,
        external: Vec<Arc<jwks::JwksProvider>>,
        store: Store,
        cache: Arc<CredentialCache>,
    ) -> Self {
        Authenticator {
            jwt,
            external,
            store,
            cache,
        }
    }

    /// The signing keys.
    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The identity behind the one credential of a request head: 400 for
    /// two different credentials, 401 for none or a malformed one.
    pub async fn authenticate_request(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, GatewayError> {
        let credential = extract::extract(headers, query)
            .map_err(|err| match err {
                extract::ExtractError::Conflicting => GatewayError::ConflictingCredentials,
                extract::ExtractError::Malformed => {
                    GatewayError::invalid("the credential is malformed")
                }
            })?
            .ok_or(GatewayError::AuthenticationRequired)?;
        self.authenticate(&credential).await
    }

    /// The identity behind a credential, or why it is refused.
    pub async fn authenticate(
        &self,
        credential: &Credential<'_>,
    ) -> Result<Identity, GatewayError> {
        match credential.kind {
            CredentialKind::Jwt => self.authenticate_jwt(&credential.secret).await,
            CredentialKind::AccessKey => self.authenticate_key(&credential.secret).await,
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Identity, GatewayError> {
        if !self.external.is_empty()
            && let Some(issuer) = jwks::unverified_issuer(token)
            && issuer != self.jwt.issuer()
        {
            return self.authenticate_external(token, &issuer).await;
        }
        let verified = self
            .jwt
            .verify(token, unix_now())
            .map_err(|rejection| GatewayError::invalid(rejection.message()))?;
        let claims = &verified.claims;
        let revoked = if self.cache.token_revoked(&claims.jti) {
            Some("the token has been revoked")
        } else {
            match self.user_facts(&claims.sub).await? {
                None => Some("the token's user no longer exists"),
                Some(facts) if facts.generation != claims.r#gen => {
                    Some("the token was revoked by a password change")
                }
                Some(_) => None,
            }
        };
        if let Some(reason) = revoked {
            self.jwt.forget_token(token);
            return Err(GatewayError::invalid(reason));
        }
        Ok(Identity {
            user: verified.user.clone(),
            roles: verified.roles.clone(),
            method: AuthMethod::Jwt,
            key_id: None,
            token: Some((claims.jti.clone(), claims.exp)),
            scope: None,
        })
    }

    /// A token of an external identity provider: its user is not in the
    /// store, so only the provider's signature, claims and revocations
    /// (logout) decide.
    async fn authenticate_external(
        &self,
        token: &str,
        issuer: &str,
    ) -> Result<Identity, GatewayError> {
        let provider = self
            .external
            .iter()
            .find(|provider| provider.issuer() == issuer)
            .ok_or_else(|| GatewayError::invalid(jwt::TokenRejection::WrongIssuer.message()))?;
        let claims = provider
            .verify(token, unix_now())
            .await
            .map_err(|rejection| GatewayError::invalid(rejection.message()))?;
        if http::HeaderValue::from_str(&claims.subject).is_err() || claims.subject.contains(',') {
            return Err(GatewayError::invalid(
                "the token's subject cannot be forwarded",
            ));
        }
        if claims
            .jti
            .as_deref()
            .is_some_and(|jti| self.cache.token_revoked(jti))
        {
            return Err(GatewayError::invalid("the token has been revoked"));
        }
        Ok(Identity {
            user: Arc::from(claims.subject),
            roles: Arc::from(claims.roles),
            method: AuthMethod::Jwt,
            key_id: None,
            token: claims.jti.map(|jti| (jti, claims.exp)),
            scope: None,
        })
    }

    async fn authenticate_key(&self, key: &str) -> Result<Identity, GatewayError> {
        if !accesskey::well_formed(key) {
            return Err(GatewayError::invalid("the access key is malformed"));
        }
        let hash = accesskey::hash(key);
        let facts = self
            .key_facts(&hash)
            .await?
            .ok_or_else(|| GatewayError::invalid("the access key is unknown or revoked"))?;
        if facts.expires_at <= unix_now() {
            return Err(GatewayError::invalid("the access key has expired"));
        }
        self.cache.last_use.note(facts.key_id, unix_now());
        Ok(Identity {
            user: facts.owner.username.clone(),
            roles: facts.roles,
            method: AuthMethod::AccessKey,
            key_id: Some(facts.key_id),
            token: None,
            scope: facts.scope,
        })
    }

    /// The user's facts, from the cache or the store. A stale entry is used
    /// when the store is unreachable, so known callers keep working.
    pub async fn user_facts(&self, username: &str) -> Result<Option<UserFacts>, GatewayError> {
        let stale = match self.cache.user(username, Instant::now()) {
            Lookup::Fresh(facts) => return Ok(facts),
            Lookup::Stale(facts) => Some(facts),
            Lookup::Missing => None,
        };
        match self.store.user(username).await {
            Ok(user) => {
                let facts = user.map(|user| UserFacts {
                    generation: user.generation,
                });
                self.cache.put_user(username, facts.clone(), Instant::now());
                Ok(facts)
            }
            Err(err) => match stale {
                Some(facts) => Ok(Some(facts)),
                None => Err(err.into()),
            },
        }
    }

    async fn key_facts(&self, hash: &accesskey::KeyHash) -> Result<Option<KeyFacts>, GatewayError> {
        let stale = match self.cache.key(hash, Instant::now()) {
            Lookup::Fresh(facts) => return Ok(facts),
            Lookup::Stale(facts) => Some(facts),
            Lookup::Missing => None,
        };
        match self.store.key_grant(&hex::encode(hash)).await {
            Ok(grant) => {
                let facts = grant.map(|grant| {
                    let owner = self.cache.key_owner(&grant.username, grant.roles);
                    let roles = match grant.scope.roles {
                        None => owner.roles.clone(),
                        Some(_) => Arc::from(grant.scope.effective_roles(&owner.roles)),
                    };
                    KeyFacts {
                        key_id: grant.key_id,
                        owner,
                        expires_at: grant.expires_at,
                        roles,
                        scope: (!grant.scope.any_request()).then(|| Arc::new(grant.scope)),
                    }
                });
                self.cache.put_key(*hash, facts.clone(), Instant::now());
                Ok(facts)
            }
            Err(err) => match stale {
                Some(facts) => Ok(Some(facts)),
                None => Err(err.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(auth: RouteAuth, roles: &[&str]) -> Route {
        Route {
            prefix: "/".into(),
            label: "/".into(),
            upstream: Some("http://127.0.0.1:1".parse().unwrap()),
            auth,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            timeout: Duration::from_secs(1),
            login: None,
            in_flight: crate::inflight::InFlight::new(1),
        }
    }

    fn identity(roles: &[&str]) -> Identity {
        Identity {
            user: Arc::from("alice"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            method: AuthMethod::Jwt,
            key_id: None,
            token: None,
            scope: None,
        }
    }

    /// Authorizes against `routes`, the first being the forwarding one.
    fn authorize_on<'a>(
        routes: &[&'a Route],
        identity: Option<Identity>,
    ) -> Result<Permit<'a>, GatewayError> {
        let matched = RouteMatch {
            route: routes[0],
            also: routes[1..].to_vec(),
        };
        authorize(&matched, identity)
    }

    #[test]
    fn authorization_table() {
        let public = route(RouteAuth::Public, &[]);
        assert!(authorize_on(&[&public], None).unwrap().identity().is_none());
        // Public routes never forward an identity, even when one was given.
        assert!(
            authorize_on(&[&public], Some(identity(&[])))
                .unwrap()
                .identity()
                .is_none()
        );

        let open = route(RouteAuth::Required, &[]);
        assert_eq!(
            authorize_on(&[&open], None).unwrap_err(),
            GatewayError::AuthenticationRequired
        );
        assert!(authorize_on(&[&open], Some(identity(&[]))).is_ok());

        let admin = route(RouteAuth::Required, &["admin", "ops"]);
        assert_eq!(
            authorize_on(&[&admin], Some(identity(&["dev"]))).unwrap_err(),
            GatewayError::MissingRole
        );
        assert!(authorize_on(&[&admin], Some(identity(&["ops"]))).is_ok());
    }

    #[test]
    fn every_route_a_path_can_be_read_under_must_allow_it() {
        let public = route(RouteAuth::Public, &[]);
        let admin = route(RouteAuth::Required, &["admin"]);
        let ops = route(RouteAuth::Required, &["ops"]);
        // Forwarded by the public route, but another reading is /admin's.
        assert_eq!(
            authorize_on(&[&public, &admin], None).unwrap_err(),
            GatewayError::AuthenticationRequired
        );
        assert_eq!(
            authorize_on(&[&public, &admin], Some(identity(&["dev"]))).unwrap_err(),
            GatewayError::MissingRole
        );
        let permit = authorize_on(&[&public, &admin], Some(identity(&["admin"]))).unwrap();
        assert_eq!(permit.identity().map(|i| &*i.user), Some("alice"));
        // Two role lists: one role of each is needed.
        assert_eq!(
            authorize_on(&[&admin, &ops], Some(identity(&["admin"]))).unwrap_err(),
            GatewayError::MissingRole
        );
        assert!(authorize_on(&[&admin, &ops], Some(identity(&["admin", "ops"]))).is_ok());
    }

    #[test]
    fn random_tokens_differ() {
        let a = random_token(16);
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_token(16));
    }
}
