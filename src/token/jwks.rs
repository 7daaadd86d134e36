//! Tokens from external identity providers, verified against the JWK set
//! each provider publishes (`[[jwt.jwks]]`).
//!
//! Keys are fetched on first use, refreshed periodically, and refetched on
//! an unknown `kid` at most once per `min_refresh` interval, so a flood of
//! random key ids cannot flood the provider. Only asymmetric keys are taken
//! from a JWK set; each key is used with its one algorithm.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::jwt::{MAX_TOKEN_BYTES, TokenRejection};

/// Largest JWK set accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[jwt.jwks]]` entry, validated.
#[derive(Debug, Clone)]
pub struct JwksSource {
    /// The provider's name (`X-Auth-Provider`): `name`, or the host of
    /// `issuer`.
    pub name: String,
    /// Where the JWK set is published.
    pub url: Uri,
    /// The only `iss` accepted for tokens under these keys.
    pub issuer: String,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Dotted path of the claim holding the roles (e.g. `realm_access.roles`).
    pub roles_claim: String,
    /// Periodic refresh interval.
    pub refresh: Duration,
    /// Shortest time between two fetches caused by unknown key ids.
    pub min_refresh: Duration,
}

/// What a verified external token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalClaims {
    /// `sub`.
    pub subject: String,
    /// Roles from the configured claim.
    pub roles: Vec<String>,
    /// `jti`, when present (for logout).
    pub jti: Option<String>,
    /// `exp`.
    pub exp: i64,
}

type KeyMap = HashMap<String, (DecodingKey, Algorithm)>;
type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One provider: its keys and when they were last fetched.
pub struct JwksProvider {
    source: JwksSource,
    /// `source.name`, shared by every identity of this provider.
    name: Arc<str>,
    keys: ArcSwap<KeyMap>,
    last_fetch: Mutex<Option<Instant>>,
    client: FetchClient,
    leeway: u64,
}

impl JwksProvider {
    /// A provider with no keys yet; `client` is shared with the proxy's
    /// TLS settings.
    pub fn new(source: JwksSource, client: FetchClient, leeway: u64) -> Arc<Self> {
        Arc::new(JwksProvider {
            name: Arc::from(source.name.as_str()),
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
            client,
            leeway,
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The provider's issuer.
    pub fn issuer(&self) -> &str {
        &self.source.issuer
    }

    /// Refreshes the keys every `refresh` until the provider is dropped.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.source.refresh;
        tokio::spawn(async move {
            loop {
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                provider.refresh(Duration::ZERO).await;
                drop(provider);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Fetches the JWK set unless the last fetch is younger than `not_within`.
    async fn refresh(&self, not_within: Duration) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < not_within) {
            return;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(Ok(keys)) => {
                info!(url = %self.source.url, keys = keys.len(), "fetched JWK set");
                self.keys.store(Arc::new(keys));
            }
            Ok(Err(err)) => {
                warn!(url = %self.source.url, error = %err, "cannot fetch JWK set; keeping the previous keys")
            }
            Err(_) => {
                warn!(url = %self.source.url, "JWK set fetch timed out; keeping the previous keys")
            }
        }
    }

    async fn fetch(&self) -> Result<KeyMap, String> {
        let request = http::Request::get(self.source.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|err| err.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| err.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|err| format!("not a JWK set: {err}"))?;
        Ok(keys_of(&set))
    }

    async fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(found) = self.keys.load().get(kid) {
            return Some(found.clone());
        }
        self.refresh(self.source.min_refresh).await;
        self.keys.load().get(kid).cloned()
    }

    /// Verifies a token from this provider.
    pub async fn verify(&self, token: &str, now: i64) -> Result<ExternalClaims, TokenRejection> {
        super::jwt::refuse_crit(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
            && !typ.eq_ignore_ascii_case("at+jwt")
        {
            return Err(TokenRejection::Malformed);
        }
        let kid = header.kid.as_deref().ok_or(TokenRejection::UnknownKey)?;
        let (key, algorithm) = self.key(kid).await.ok_or(TokenRejection::UnknownKey)?;
        if header.alg != algorithm {
            return Err(TokenRejection::BadSignature);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.source.issuer.as_str()]);
        // jsonwebtoken checks `aud` only when the token has one: a
        // configured audience must also make the claim required.
        match &self.source.audience {
            Some(audience) => {
                validation.set_audience(&[audience.as_str()]);
                validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            }
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|err| super::jwt::rejection_of(&err))?;
        let claims = data.claims;
        if claims["iat"]
            .as_i64()
            .is_some_and(|iat| iat > now.saturating_add(self.leeway as i64))
        {
            return Err(TokenRejection::NotYetValid);
        }
        let subject = claims["sub"]
            .as_str()
            .ok_or(TokenRejection::Malformed)?
            .to_owned();
        let roles = roles_at(&claims, &self.source.roles_claim);
        Ok(ExternalClaims {
            subject,
            roles,
            jti: claims["jti"].as_str().map(str::to_owned),
            exp: claims["exp"].as_i64().ok_or(TokenRejection::Malformed)?,
        })
    }
}

/// Whether a JWK may verify signatures (RFC 7517 sections 4.2 and 4.3): a
/// `use` other than `sig`, or `key_ops` without `verify`, means the
/// provider published the key for something else (encryption), and a
/// token "signed" under it must not pass.
fn for_verifying(jwk: &Jwk) -> bool {
    let use_ok = match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => true,
        Some(_) => false,
    };
    let ops_ok = match &jwk.common.key_operations {
        None => true,
        Some(ops) => ops.iter().any(|op| matches!(op, KeyOperations::Verify)),
    };
    use_ok && ops_ok
}

/// The asymmetric signature-verification keys of a JWK set that have a
/// `kid`, each with its one algorithm: the JWK's `alg`, or the only one its
/// key type allows here.
fn keys_of(set: &JwkSet) -> KeyMap {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if !for_verifying(jwk) {
            debug!(kid = %kid, "skipping a JWK not meant for verifying signatures");
            continue;
        }
        let inferred = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Some(Algorithm::EdDSA)
            }
            // Symmetric keys in a public JWK set are refused outright.
            _ => None,
        };
        let Some(inferred) = inferred else {
            continue;
        };
        let algorithm = match jwk.common.key_algorithm.map(Algorithm::try_from) {
            Some(Ok(algorithm)) => algorithm,
            Some(Err(_)) => continue,
            None => inferred,
        };
        let family_matches = matches!(
            (inferred, algorithm),
            (
                Algorithm::RS256,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Algorithm::ES256, Algorithm::ES256)
                | (Algorithm::EdDSA, Algorithm::EdDSA)
        );
        if !family_matches {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, (key, algorithm));
            }
            Err(err) => debug!(kid = %kid, error = %err, "skipping unusable JWK"),
        }
    }
    keys
}

/// The roles at a dotted claim path: an array of strings, or one string of
/// space- or comma-separated roles.
pub fn roles_at(claims: &serde_json::Value, path: &str) -> Vec<String> {
    let mut value = claims;
    for part in path.split('.') {
        match value.get(part) {
            Some(next) => value = next,
            None => return Vec::new(),
        }
    }
    let roles: Vec<String> = match value {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::String(text) => text
            .split([' ', ','])
            .filter(|role| !role.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    // Roles travel comma-separated in X-Auth-Roles; keep only safe names.
    roles
        .into_iter()
        .filter(|role| crate::names::valid_role(role))
        .collect()
}

/// The `iss` claim of a token, read without verifying it, to pick the keys
/// to verify it with.
pub fn unverified_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    #[derive(Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Peek>(&bytes).ok()?.iss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_claim_paths() {
        let claims = serde_json::json!({
            "roles": ["admin", "ops"],
            "scope": "read write",
            "realm_access": { "roles": ["dev", "bad,role"] }
        });
        assert_eq!(roles_at(&claims, "roles"), vec!["admin", "ops"]);
        assert_eq!(roles_at(&claims, "scope"), vec!["read", "write"]);
        assert_eq!(roles_at(&claims, "realm_access.roles"), vec!["dev"]);
        assert!(roles_at(&claims, "missing.path").is_empty());
    }

    #[test]
    fn issuer_peek() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://idp.example","sub":"a"}"#);
        assert_eq!(
            unverified_issuer(&format!("h.{payload}.s")).as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(unverified_issuer("garbage"), None);
        assert_eq!(
            unverified_issuer(&format!("h.{}.s", URL_SAFE_NO_PAD.encode("{}"))),
            None
        );
    }

    #[test]
    fn symmetric_and_mislabelled_keys_are_ignored() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "ec-as-hs", "alg": "HS256", "crv": "P-256",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "kid": "ec", "crv": "P-256",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }
        ]}))
        .unwrap();
        let keys = keys_of(&set);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["ec"].1, Algorithm::ES256);
    }

    #[test]
    fn keys_for_encryption_are_not_used_to_verify() {
        let ec = |kid: &str, extra: serde_json::Value| {
            let mut key = serde_json::json!({ "kty": "EC", "kid": kid, "crv": "P-256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" });
            for (name, value) in extra.as_object().unwrap() {
                key[name] = value.clone();
            }
            key
        };
        let set: JwkSet = serde_json::from_value(serde_json::json!({ "keys": [
            ec("enc", serde_json::json!({ "use": "enc" })),
            ec("encrypt-ops", serde_json::json!({ "key_ops": ["encrypt", "wrapKey"] })),
            ec("sign-only", serde_json::json!({ "key_ops": ["sign"] })),
            ec("sig", serde_json::json!({ "use": "sig" })),
            ec("verify-ops", serde_json::json!({ "key_ops": ["verify"] })),
            ec("plain", serde_json::json!({})),
        ]}))
        .unwrap();
        let mut kids: Vec<String> = keys_of(&set).into_keys().collect();
        kids.sort();
        assert_eq!(kids, ["plain", "sig", "verify-ops"]);
    }
}
