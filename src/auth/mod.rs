//! Authentication and authorization: from a request's credential to an
//! [`Identity`], and from an identity and a route to a [`Permit`].

pub mod accesskey;
pub mod digest;
pub mod extract;
pub mod onetime;
pub mod password;
pub mod throttle;

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::unix_now;
use crate::error::GatewayError;
use crate::routes::{Route, RouteAuth, RouteMatch};
use crate::scope::{KeyRateLimit, KeyScope};
use crate::store::cache::{CredentialCache, KeyFacts, Lookup, UserFacts};
use crate::store::{Store, User};
use crate::token::jwks;
use crate::token::jwt::{self, JwtKeys, TokenVerifier};
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

pub use crate::store::LOCAL_PROVIDER;

/// A user recorded in the store: `local`, or signed in through the
/// `[[oidc]]` provider named here. Made only from the store's own records
/// (a [`User`] row, a user's cached facts, a key's owner), never from a
/// token's claims alone, so whatever takes one (the access-key API) cannot
/// be reached by a subject of an external provider that happens to share
/// the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUser {
    name: Arc<str>,
    provider: Arc<str>,
}

impl StoreUser {
    /// The store user behind a record read from the store.
    pub fn from_record(user: &User) -> StoreUser {
        StoreUser {
            name: Arc::from(user.username.as_str()),
            provider: Arc::from(user.provider_name()),
        }
    }

    /// A store user for unit tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, provider: &str) -> StoreUser {
        StoreUser {
            name: Arc::from(name),
            provider: Arc::from(provider),
        }
    }

    /// The user name (unique in the store).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `local` or the `[[oidc]]` provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

/// Who a caller is: a provider and a subject together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user in the store.
    Store(StoreUser),
    /// A subject of a `[[jwt.jwks]]` provider: not in the store, owns
    /// nothing there.
    External {
        /// The provider's name (`[[jwt.jwks]] name`).
        provider: Arc<str>,
        /// The token's `sub`.
        subject: Arc<str>,
    },
}

/// Who is calling, once a credential was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider and the subject.
    pub principal: Principal,
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
    /// An access key's own budget; `None`: none (JWTs never have one).
    pub rate_limit: Option<KeyRateLimit>,
    /// The `X-Auth-*` values, made where the identity's parts are cached.
    /// Behind an `Arc`: an identity travels inside every request's future,
    /// and four values inline would make each move of it 160 bytes longer.
    pub values: Arc<IdentityValues>,
}

/// An identity's `X-Auth-User`, `X-Auth-Provider` and `X-Auth-Roles`
/// values (`X-Auth-Key-Id` is formatted from `Identity::key_id`). Made once where a token, a user or a key is
/// cached (`names::header_value`) and cloned (a reference count) into each
/// request's identity; `None` where a value cannot be a header (left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityValues {
    /// `X-Auth-User`.
    pub user: Option<http::HeaderValue>,
    /// `X-Auth-Provider`.
    pub provider: Option<http::HeaderValue>,
    /// `X-Auth-Roles`.
    pub roles: Option<http::HeaderValue>,
}

impl IdentityValues {
    /// The values of an identity whose parts are not cached (an external
    /// provider's token) or made up (tests).
    pub fn of(user: &str, provider: &str, roles: &[String]) -> Self {
        IdentityValues {
            user: crate::names::header_value(user),
            provider: crate::names::header_value(provider),
            roles: crate::names::roles_header_value(roles),
        }
    }
}

impl Identity {
    /// The subject: a store user's name, or an external provider's `sub`.
    /// Unique only together with [`Self::provider`].
    pub fn user(&self) -> &Arc<str> {
        match &self.principal {
            Principal::Store(user) => &user.name,
            Principal::External { subject, .. } => subject,
        }
    }

    /// The provider's name (`X-Auth-Provider`).
    pub fn provider(&self) -> &Arc<str> {
        match &self.principal {
            Principal::Store(user) => &user.provider,
            Principal::External { provider, .. } => provider,
        }
    }

    /// The store user this caller is; 403 `STORE_USER_REQUIRED` for an
    /// external identity. The only way from an identity to what a store
    /// user owns.
    pub fn store_user(&self) -> Result<&StoreUser, GatewayError> {
        match &self.principal {
            Principal::Store(user) => Ok(user),
            Principal::External { .. } => Err(GatewayError::StoreUserRequired),
        }
    }

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
        // An optional route forwards the identity of a good credential
        // given (the judgement authenticated it); a public one never does.
        let identity = identity.filter(|_| route.auth == RouteAuth::Optional);
        return Ok(Permit { route, identity });
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
/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Authenticator {
    jwt: TokenVerifier,
    external: Vec<Arc<jwks::JwksProvider>>,
    store: Store,
    cache: Arc<CredentialCache>,
    sources: extract::Sources,
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
            jwt: TokenVerifier::new(jwt),
            external,
            store,
            cache,
            sources: extract::Sources::default(),
        }
    }

    /// Reads credentials from `sources` (the access-key header, whether
    /// the query may carry one) instead of the defaults.
    pub fn with_sources(mut self, sources: extract::Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Where credentials are read from.
    pub fn sources(&self) -> &extract::Sources {
        &self.sources
    }

    /// The signing keys.
    pub fn jwt(&self) -> &JwtKeys {
        self.jwt.keys()
    }

    /// The verified-token cache, for revocations to reach and for
    /// `/metrics`.
    pub fn token_cache(&self) -> &Arc<crate::token::cache::TokenCache> {
        self.jwt.token_cache()
    }

    /// The identity behind the one credential of a request head: 400 for
    /// two different credentials, 401 for none or a malformed one.
    pub async fn authenticate_request(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, GatewayError> {
        let credential = extract::extract(headers, query, &self.sources)
            .map_err(|err| match err {
                extract::ExtractError::Conflicting => GatewayError::ConflictingCredentials,
                extract::ExtractError::InQuery => GatewayError::CredentialInQuery,
                extract::ExtractError::Malformed => {
                    GatewayError::invalid("the credential is malformed")
                }
            })?
            .ok_or(GatewayError::AuthenticationRequired)?;
        self.authenticate(&credential).await
    }

    /// Resolves once the credential in `headers` and `query`, good when this
    /// is called, stops working: it is checked again at every revocation the
    /// cache learns of, here or from another process. A check that fails for
    /// want of the store (5xx) leaves it working, as it leaves known callers
    /// working on the request path. For work that outlives its request: a
    /// spliced WebSocket is closed when this resolves.
    pub fn until_revoked(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let auth = self.clone();
        let headers = headers.clone();
        let query = query.map(str::to_owned);
        // Subscribed before the first check, so a revocation that lands
        // between the request's own check and this one is not missed.
        let mut revocations = self.cache.revocations();
        async move {
            loop {
                match auth.authenticate_request(&headers, query.as_deref()).await {
                    Err(err) if err.status_code().is_client_error() => return,
                    _ => {}
                }
                if revocations.changed().await.is_err() {
                    break;
                }
            }
            // The cache is gone (the process is stopping): nothing will
            // revoke this credential any more.
            std::future::pending().await
        }
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
            && issuer != self.jwt.keys().issuer()
        {
            return self.authenticate_external(token, &issuer).await;
        }
        let verified = self
            .jwt
            .verify(token, unix_now())
            .map_err(|rejection| GatewayError::invalid(rejection.message()))?;
        let claims = &verified.claims;
        let facts = if self.cache.token_revoked(&claims.jti) {
            Err("the token has been revoked")
        } else {
            match self.user_facts(&claims.sub).await? {
                None => Err("the token's user no longer exists"),
                Some(facts) if facts.generation != claims.r#gen => Err(
                    "the token was revoked by a password change or a sign-in that took roles away",
                ),
                Some(facts) => Ok(facts),
            }
        };
        let facts = match facts {
            Ok(facts) => facts,
            Err(reason) => {
                self.jwt.forget_token(token);
                return Err(GatewayError::invalid(reason));
            }
        };
        Ok(Identity {
            principal: Principal::Store(StoreUser {
                name: verified.user.clone(),
                provider: facts.provider,
            }),
            roles: verified.roles.clone(),
            method: AuthMethod::Jwt,
            key_id: None,
            token: Some((claims.jti.clone(), claims.exp)),
            scope: None,
            rate_limit: None,
            values: Arc::new(IdentityValues {
                user: verified.user_value.clone(),
                provider: facts.provider_value,
                roles: verified.roles_value.clone(),
            }),
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
        // The subject is forwarded as X-Auth-User and compared with store
        // names: held to the same alphabet as those names.
        if !crate::names::valid_username(&claims.subject) {
            return Err(GatewayError::invalid(
                "the token's subject is not a valid user name (1 to 64 of A-Z a-z 0-9 . _ @ -)",
            ));
        }
        if claims
            .jti
            .as_deref()
            .is_some_and(|jti| self.cache.token_revoked(jti))
        {
            return Err(GatewayError::invalid("the token has been revoked"));
        }
        // A subject that names a store user is not that user: refused, so
        // an upstream reading only X-Auth-User cannot mistake one for the
        // other.
        if self.user_facts(&claims.subject).await?.is_some() {
            return Err(GatewayError::AccountConflict);
        }
        let values = Arc::new(IdentityValues::of(
            &claims.subject,
            provider.name(),
            &claims.roles,
        ));
        Ok(Identity {
            principal: Principal::External {
                provider: provider.name().clone(),
                subject: Arc::from(claims.subject),
            },
            values,
            roles: Arc::from(claims.roles),
            method: AuthMethod::Jwt,
            key_id: None,
            token: claims.jti.map(|jti| (jti, claims.exp)),
            scope: None,
            rate_limit: None,
        })
    }

    async fn authenticate_key(&self, key: &str) -> Result<Identity, GatewayError> {
        // The full shape and checksum are checked on a cache miss, before
        // the store: a cached key was well formed when it was put.
        if key.len() > accesskey::MAX_KEY_BYTES {
            return Err(malformed_key());
        }
        let hash = accesskey::hash(key);
        let facts = self
            .key_facts(key, &hash)
            .await?
            .ok_or_else(|| GatewayError::invalid("the access key is unknown or revoked"))?;
        if facts.expires_at <= unix_now() {
            return Err(GatewayError::invalid("the access key has expired"));
        }
        self.cache.last_use.note(facts.key_id, unix_now());
        Ok(Identity {
            principal: Principal::Store(StoreUser {
                name: facts.owner.username.clone(),
                provider: facts.owner.provider.clone(),
            }),
            values: Arc::new(IdentityValues {
                user: facts.owner.username_value.clone(),
                provider: facts.owner.provider_value.clone(),
                roles: facts.roles_value,
            }),
            roles: facts.roles,
            method: AuthMethod::AccessKey,
            key_id: Some(facts.key_id),
            token: None,
            scope: facts.scope,
            rate_limit: facts.rate_limit,
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
                let facts = user.map(|user| UserFacts::of(&user));
                self.cache.put_user(username, facts.clone(), Instant::now());
                Ok(facts)
            }
            Err(err) => match stale {
                Some(facts) => Ok(Some(facts)),
                None => Err(err.into()),
            },
        }
    }

    /// The facts of `key` (whose hash is `hash`), from the cache or the
    /// store; a key the cache does not know must be well formed.
    async fn key_facts(
        &self,
        key: &str,
        hash: &accesskey::KeyHash,
    ) -> Result<Option<KeyFacts>, GatewayError> {
        let admissible = || accesskey::well_formed(key);
        let stale = match self.cache.admissible_key(hash, Instant::now(), admissible) {
            None => return Err(malformed_key()),
            Some(Lookup::Fresh(facts)) => return Ok(facts),
            Some(Lookup::Stale(facts)) => Some(facts),
            Some(Lookup::Missing) => None,
        };
        match self.store.key_grant(&hex::encode(hash), unix_now()).await {
            Ok(grant) => {
                let facts = grant.map(|grant| {
                    let owner = self.cache.key_owner(
                        &grant.username,
                        grant.provider.as_deref().unwrap_or(LOCAL_PROVIDER),
                        grant.roles,
                    );
                    let (roles, roles_value) = match grant.scope.roles {
                        None => (owner.roles.clone(), owner.roles_value.clone()),
                        Some(_) => {
                            let roles = grant.scope.effective_roles(&owner.roles);
                            let value = crate::names::roles_header_value(&roles);
                            (Arc::from(roles), value)
                        }
                    };
                    KeyFacts {
                        roles_value,
                        key_id: grant.key_id,
                        owner,
                        expires_at: grant.expires_at,
                        roles,
                        scope: (!grant.scope.any_request()).then(|| Arc::new(grant.scope)),
                        rate_limit: grant.rate_limit,
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

/// A presented access key that cannot be one: too long, the wrong shape or
/// checksum.
fn malformed_key() -> GatewayError {
    GatewayError::invalid("the access key is malformed")
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
            hosts: vec![],
            methods: None,
            rewrite: crate::routes::PrefixRewrite::Keep,
            in_flight: crate::inflight::InFlight::new(1),
            assertion_audience: None,
            pool: None,
            cors: None,
        }
    }

    fn identity(roles: &[&str]) -> Identity {
        Identity {
            principal: Principal::Store(StoreUser {
                name: Arc::from("alice"),
                provider: Arc::from(LOCAL_PROVIDER),
            }),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            method: AuthMethod::Jwt,
            key_id: None,
            token: None,
            scope: None,
            rate_limit: None,
            values: Arc::default(),
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
        assert_eq!(permit.identity().map(|i| &**i.user()), Some("alice"));
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
