//! Sign-in through external OpenID Connect providers (`[[oidc]]`), with the
//! `openidconnect` crate: discovery, the authorization code flow with PKCE
//! (S256), `state` and `nonce`, and ID token verification against the
//! provider's JWK set (cached; fetched again when an ID token from the
//! token endpoint does not verify under the keys held). What the browser must bring back is
//! sealed in a cookie ([`crate::token::state::Sealer`]); the outcome is a
//! user name and roles, which the API layer records and signs in.

pub mod client;
pub mod redirect;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims,
    IdTokenFields, IdTokenVerifier, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};
use tracing::{info, warn};

use crate::config::{OidcProviderConfig, UpstreamConfig};
use crate::error::GatewayError;
use crate::tls::TlsError;
use crate::token::state::{RootSecret, Sealer};
use client::ProviderHttp;

/// How long a started sign-in may take until the callback.
pub const SIGN_IN_TTL_SECS: i64 = 600;
/// The longest `sub` a user is bound to (OpenID Connect Core 1.0 section 2).
const MAX_SUBJECT_BYTES: usize = 255;
/// The cookie holding a started sign-in, scoped to `/auth/oidc/<name>/`.
pub const STATE_COOKIE: &str = "authgate_oidc";

/// Every claim of the ID token beyond the standard ones, kept so the
/// configured `username_claim` and `roles_claim` can be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for OtherClaims {}

type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// ID tokens are accepted under these algorithms only: asymmetric ones, so
/// the key is the provider's alone (not the client secret).
const ALLOWED_ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A sign-in between its start and the callback: what the browser carries,
/// sealed, in [`STATE_COOKIE`].
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    rd: String,
}

/// Where to send the browser to start signing in.
pub struct SignInStart {
    /// The provider's authorization URL with this sign-in's parameters.
    pub location: String,
    /// The sealed [`STATE_COOKIE`] value.
    pub cookie: String,
}

/// A finished sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// The authgate user name (from `username_claim`).
    pub username: String,
    /// The provider's `sub`: the account the name is bound to.
    pub subject: String,
    /// Roles from `roles_claim` (empty without one).
    pub roles: Vec<String>,
    /// Where the browser goes next.
    pub rd: String,
}

/// What discovery found, kept for the provider's lifetime.
struct Discovered {
    client: OidcClient,
    issuer: IssuerUrl,
    jwks_url: openidconnect::JsonWebKeySetUrl,
}

/// One configured provider.
pub struct OidcProvider {
    config: OidcProviderConfig,
    /// Seals the sign-in state cookie: derived from the JWT signing
    /// material and the client secret, so the same on every replica.
    sealer: Sealer,
    http: ProviderHttp,
    leeway: u64,
    discovered: OnceCell<Discovered>,
    jwks: ArcSwap<CoreJsonWebKeySet>,
    jwks_fetched: Mutex<Option<Instant>>,
}

/// The configured providers, by name.
#[derive(Default)]
pub struct Providers(Vec<Arc<OidcProvider>>);

impl Providers {
    /// One provider per `[[oidc]]` entry; nothing is fetched yet (discovery
    /// happens at the first sign-in, so a provider that is down does not
    /// stop the gateway).
    pub fn try_new(
        configs: &[OidcProviderConfig],
        root: &RootSecret,
        upstream: &UpstreamConfig,
        leeway: u64,
    ) -> Result<Self, TlsError> {
        configs
            .iter()
            .map(|config| {
                Ok(Arc::new(OidcProvider {
                    http: ProviderHttp::try_new(upstream, config.ca_file.as_deref())?,
                    sealer: Sealer::derive(
                        root,
                        config.client_secret_text().as_bytes(),
                        &format!("oidc:{}", config.name),
                    ),
                    config: config.clone(),
                    leeway,
                    discovered: OnceCell::new(),
                    jwks: ArcSwap::from_pointee(CoreJsonWebKeySet::new(Vec::new())),
                    jwks_fetched: Mutex::new(None),
                }))
            })
            .collect::<Result<Vec<_>, TlsError>>()
            .map(Providers)
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<OidcProvider>> {
        self.0.iter().find(|provider| provider.config.name == name)
    }

    /// The providers' names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|provider| provider.config.name.as_str())
    }
}

/// Every sign-in refusal caused by the browser's request says this.
const BAD_STATE: GatewayError = GatewayError::SignInFailed(
    "the sign-in state is missing, changed, used or expired; start the sign-in again",
);

impl OidcProvider {
    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The path the state cookie is scoped to.
    pub fn cookie_path(&self) -> String {
        format!("/auth/oidc/{}/", self.config.name)
    }

    async fn discovered(&self) -> Result<&Discovered, GatewayError> {
        self.discovered
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.config.issuer.clone())
                    .map_err(|_| GatewayError::ProviderUnavailable)?;
                let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &self.http)
                    .await
                    .map_err(|err| {
                        warn!(provider = %self.config.name, error = %err, "OIDC discovery failed");
                        GatewayError::ProviderUnavailable
                    })?;
                let jwks_url = metadata.jwks_uri().clone();
                self.jwks.store(Arc::new(metadata.jwks().clone()));
                *self.jwks_fetched.lock().await = Some(Instant::now());
                let redirect = RedirectUrl::new(self.config.redirect_url.clone())
                    .map_err(|_| GatewayError::Internal)?;
                let client = OidcClient::from_provider_metadata(
                    metadata,
                    ClientId::new(self.config.client_id.clone()),
                    Some(ClientSecret::new(self.config.client_secret_text().to_owned())),
                )
                .set_redirect_uri(redirect);
                info!(provider = %self.config.name, issuer = %self.config.issuer, "OIDC provider discovered");
                Ok(Discovered {
                    client,
                    issuer,
                    jwks_url,
                })
            })
            .await
    }

    /// Starts a sign-in that returns to `rd` (checked here: see
    /// [`redirect::safe_return_path`]).
    pub async fn begin(&self, rd: Option<&str>, now: i64) -> Result<SignInStart, GatewayError> {
        let discovered = self.discovered().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(
                self.config
                    .scopes
                    .iter()
                    .filter(|scope| *scope != "openid")
                    .map(|scope| Scope::new(scope.clone())),
            )
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            rd: redirect::safe_return_path(rd),
        };
        Ok(SignInStart {
            location: url.to_string(),
            cookie: self
                .sealer
                .seal(&pending, now.saturating_add(SIGN_IN_TTL_SECS)),
        })
    }

    /// Finishes a sign-in: checks `state` against the sealed cookie,
    /// exchanges `code` (with the PKCE verifier) and verifies the ID token.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie: Option<&str>,
        now: i64,
    ) -> Result<SignedIn, GatewayError> {
        let pending: Pending = cookie
            .ok_or(BAD_STATE)
            .and_then(|sealed| self.sealer.open(sealed, now).map_err(|_| BAD_STATE))?;
        let state_matches: bool =
            subtle::ConstantTimeEq::ct_eq(pending.state.as_bytes(), state.as_bytes()).into();
        if !state_matches || code.is_empty() {
            return Err(BAD_STATE);
        }
        let discovered = self.discovered().await?;
        let exchange = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| GatewayError::ProviderUnavailable)?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier));
        let tokens = exchange.request_async(&self.http).await.map_err(|err| {
            match err {
                RequestTokenError::ServerResponse(response) => {
                    info!(provider = %self.config.name, error = %response.error(), "the provider refused the authorization code");
                    GatewayError::SignInFailed(
                        "the provider refused the authorization code (used, expired or not issued for this sign-in)",
                    )
                }
                other => {
                    warn!(provider = %self.config.name, error = %other, "OIDC token request failed");
                    GatewayError::ProviderUnavailable
                }
            }
        })?;
        let received = Instant::now();
        let id_token = tokens
            .id_token()
            .ok_or(GatewayError::SignInFailed("the provider sent no ID token"))?;
        let nonce = Nonce::new(pending.nonce);
        // The ID token came from the provider's own token endpoint, over the
        // connection this gateway opened: a key it does not verify under
        // (an unknown kid, or a kid whose key was replaced) means the
        // provider rotated, so the keys are fetched again at once, once per
        // token unless someone fetched them after it arrived.
        let claims = match id_token.claims(&self.verifier(discovered), &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(_))
                if self.refetch_jwks(discovered, received).await =>
            {
                id_token.claims(&self.verifier(discovered), &nonce).cloned()
            }
            other => other.cloned(),
        }
        .map_err(|err| {
            let refusal = refusal_of(&err);
            info!(provider = %self.config.name, reason = refusal.to_string(), "ID token refused");
            refusal
        })?;
        let (username, roles) = self.identity_of(&claims)?;
        let subject = claims.subject().as_str();
        // OpenID Connect Core 1.0 section 2: at most 255 ASCII characters.
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || !subject.is_ascii() {
            return Err(GatewayError::SignInFailed(
                "the ID token's sub is empty, longer than 255 characters or not ASCII",
            ));
        }
        Ok(SignedIn {
            username,
            subject: subject.to_owned(),
            roles,
            rd: pending.rd,
        })
    }

    fn verifier(&self, discovered: &Discovered) -> IdTokenVerifier<'static, CoreJsonWebKey> {
        let leeway = i64::try_from(self.leeway).unwrap_or(0);
        IdTokenVerifier::new_confidential_client(
            ClientId::new(self.config.client_id.clone()),
            ClientSecret::new(self.config.client_secret_text().to_owned()),
            discovered.issuer.clone(),
            (**self.jwks.load()).clone(),
        )
        .set_allowed_algs(ALLOWED_ALGORITHMS)
        // `exp` with the configured leeway: the verifier's clock runs
        // `leeway` behind.
        .set_time_fn(move || {
            chrono::DateTime::from_timestamp(crate::clock::unix_now().saturating_sub(leeway), 0)
                .unwrap_or_default()
        })
    }

    /// Fetches the JWK set again for an ID token received at `received`
    /// that the keys held do not verify, unless it was fetched after the
    /// token arrived (sign-ins at once share one fetch); whether the keys
    /// are now newer than the token. No cool-down: only the provider's
    /// token endpoint hands out these tokens, so a client cannot make the
    /// gateway fetch at will.
    async fn refetch_jwks(&self, discovered: &Discovered, received: Instant) -> bool {
        let mut fetched = self.jwks_fetched.lock().await;
        if fetched.is_some_and(|at| at >= received) {
            return true;
        }
        *fetched = Some(Instant::now());
        match CoreJsonWebKeySet::fetch_async(&discovered.jwks_url, &self.http).await {
            Ok(set) => {
                info!(provider = %self.config.name, keys = set.keys().len(), "fetched the provider's JWK set for an unknown key id");
                self.jwks.store(Arc::new(set));
                true
            }
            Err(err) => {
                warn!(provider = %self.config.name, error = %err, "cannot fetch the provider's JWK set; keeping the previous keys");
                false
            }
        }
    }

    /// The user name and roles the claims give. An email address names a
    /// user only when the provider says it verified it: anyone can put a
    /// victim's address on an account at many providers.
    fn identity_of(&self, claims: &Claims) -> Result<(String, Vec<String>), GatewayError> {
        if self.config.username_claim == "email"
            && !self.config.allow_unverified_email
            && claims.email_verified() != Some(true)
        {
            return Err(GatewayError::EmailNotVerified);
        }
        let value = serde_json::to_value(claims).map_err(|_| GatewayError::Internal)?;
        let username = value
            .get(&self.config.username_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|name| crate::names::valid_username(name))
            .ok_or(GatewayError::SignInFailed(
                "the provider's username claim is missing or not a valid user name (1 to 64 of A-Z a-z 0-9 . _ @ -)",
            ))?;
        let roles = match &self.config.roles_claim {
            Some(path) => crate::token::jwks::roles_at(&value, path),
            None => Vec::new(),
        };
        Ok((username.to_owned(), roles))
    }
}

/// For a request without a credential on `route`: the sign-in it is sent
/// to, when the route names a provider and the client is a browser (its
/// `Accept` lists `text/html`); API clients get 401 as before.
pub fn sign_in_required(
    route: &crate::routes::Route,
    headers: &::http::HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Option<GatewayError> {
    let provider = route.login.as_deref()?;
    if !redirect::accepts_html(headers) {
        return None;
    }
    let target = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    Some(GatewayError::SignInRequired {
        location: redirect::login_location(provider, &target),
    })
}

/// The fixed answer for an ID token that failed verification.
fn refusal_of(err: &ClaimsVerificationError) -> GatewayError {
    GatewayError::SignInFailed(match err {
        ClaimsVerificationError::Expired(_) => "the ID token has expired",
        ClaimsVerificationError::InvalidAudience(_) => {
            "the ID token was issued to another client (aud or azp)"
        }
        ClaimsVerificationError::InvalidIssuer(_) => "the ID token comes from another issuer",
        ClaimsVerificationError::InvalidNonce(_) => {
            "the ID token's nonce does not belong to this sign-in"
        }
        ClaimsVerificationError::SignatureVerification(_) => {
            "the ID token's signature does not verify with the provider's keys"
        }
        _ => "the ID token is invalid",
    })
}
