//! Issuing and checking JWTs: the HS256 secret and the asymmetric keys of
//! `[[jwt.keys]]` (RS256, ES256, EdDSA), each key pinned to its one
//! algorithm; a token's `kid` picks its key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};

use super::cache::TokenCache;
pub use super::claims::{Claims, VerifiedToken};

/// Tokens longer than this are refused before any parsing or crypto.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. The variants become fixed 401 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is too long")]
    TooLong,
    /// Not a JWT, or claims missing or of the wrong type.
    #[error("the token is malformed")]
    Malformed,
    /// Signature does not verify, or the algorithm is not the configured one.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// The `kid` names no configured key, or is missing where it is needed.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// `aud` is not the configured audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// The header has `crit`: the token depends on an extension this
    /// gateway does not implement (RFC 7515 §4.1.11).
    #[error("the token requires a header extension this gateway does not support")]
    CriticalExtension,
}

impl TokenRejection {
    /// The 401 message for this rejection.
    pub fn message(self) -> &'static str {
        match self {
            TokenRejection::TooLong => "the token is too long",
            TokenRejection::Malformed => "the token is malformed",
            TokenRejection::BadSignature => "the token signature is invalid",
            TokenRejection::Expired => "the token has expired",
            TokenRejection::NotYetValid => "the token is not valid yet",
            TokenRejection::WrongIssuer => "the token was issued by another issuer",
            TokenRejection::UnknownKey => "the token's signing key is unknown",
            TokenRejection::WrongAudience => "the token is meant for another audience",
            TokenRejection::CriticalExtension => {
                "the token requires a header extension this gateway does not support"
            }
        }
    }
}

/// One asymmetric key from `[[jwt.keys]]`, as read from its PEM files.
#[derive(Clone)]
pub struct KeySpec {
    /// Key id; tokens name it in their `kid` header.
    pub kid: String,
    /// The one algorithm tokens under this key may use.
    pub algorithm: Algorithm,
    /// PKCS#8 PEM private key; `None` for verify-only keys.
    pub private_pem: Option<Vec<u8>>,
    /// PEM public key.
    pub public_pem: Vec<u8>,
}

/// A verification key with its pinned algorithm.
struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The key tokens are signed with.
struct SignKey {
    encoding: EncodingKey,
    header: Header,
}

/// Signs and verifies tokens with the configured keys. Built once per
/// config.
///
/// A token's `kid` picks the asymmetric key, and only that key's algorithm
/// is accepted. A token without `kid` is checked against the HS256 secret
/// when there is one (HS256 tokens never carry a `kid`), else against the
/// only asymmetric key; with several asymmetric keys and no secret it is
/// refused. The HS256 secret is never tried for a token that names a key,
/// and a public key is never used as an HMAC secret, which rules out
/// algorithm confusion.
pub struct JwtKeys {
    signer: SignKey,
    hmac: Option<VerifyKey>,
    by_kid: HashMap<String, VerifyKey>,
    issuer: String,
    ttl: Duration,
    leeway: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("JwtKeys")
            .field("hs256", &self.hmac.is_some())
            .field("kids", &kids)
            .field("signer", &self.signer.header.kid)
            .finish()
    }
}

/// Verifies tokens with [`JwtKeys`], remembering the tokens whose signature
/// and claims were checked: a repeated token skips the signature (ES256 and
/// RS256 cost far more than the rest of a request). Entries go with their
/// `exp`, and with their user's or their own revocation (the credential
/// cache forwards those, see [`Self::token_cache`]); the caller still
/// checks `jti` and the user's generation on every request, which covers
/// the moment between a revocation and its arrival here. The gateway builds
/// one per configuration, so a reload starts with an empty cache; clones
/// share it.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<JwtKeys>,
    verified: Arc<TokenCache>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys)
            .field("cached", &self.verified.len())
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier with an empty cache.
    pub fn new(keys: Arc<JwtKeys>) -> Self {
        TokenVerifier {
            keys,
            verified: Arc::default(),
        }
    }

    /// The keys it verifies with (and the gateway signs with).
    pub fn keys(&self) -> &Arc<JwtKeys> {
        &self.keys
    }

    /// [`JwtKeys::verify`]; a token verified before is only checked for
    /// expiry.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLong);
        }
        if let Some(verified) = self.verified.get(token) {
            if now <= verified.claims.exp.saturating_add(self.keys.leeway) {
                return Ok(verified);
            }
            self.verified.forget_token(token);
            return Err(TokenRejection::Expired);
        }
        let verified = self.keys.verify(token, now)?;
        self.verified.insert(token, verified.clone());
        Ok(verified)
    }

    /// The verified-token cache, for revocations to reach (see
    /// [`crate::store::cache::CredentialCache::watch_token_cache`]).
    pub fn token_cache(&self) -> &Arc<TokenCache> {
        &self.verified
    }

    /// Tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.verified.len()
    }

    /// Drops one token from the verified-token cache: the caller found it
    /// revoked, and a revoked token must not keep a place there.
    pub fn forget_token(&self, token: &str) {
        self.verified.forget_token(token);
    }
}

/// Algorithms accepted in `[[jwt.keys]]`.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Key ids: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl JwtKeys {
    /// Builds the keys. `secret` is the HS256 secret, `keys` the asymmetric
    /// keys in config order; the first key with a private key signs, else
    /// the secret does.
    pub fn try_new(
        issuer: &str,
        ttl: Duration,
        leeway: u64,
        secret: Option<&[u8]>,
        keys: &[KeySpec],
    ) -> Result<Self, String> {
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = leeway;
            validation.validate_nbf = true;
            validation.validate_exp = true;
            validation.validate_aud = false;
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
            validation
        };
        let mut signer = None;
        let mut by_kid = HashMap::new();
        for spec in keys {
            let decoding = decoding_key(spec.algorithm, &spec.public_pem)
                .map_err(|err| format!("key {:?}: public key: {err}", spec.kid))?;
            if let Some(private) = &spec.private_pem {
                let encoding = encoding_key(spec.algorithm, private)
                    .map_err(|err| format!("key {:?}: private key: {err}", spec.kid))?;
                check_pair(&encoding, &decoding, spec.algorithm)
                    .map_err(|err| format!("key {:?}: {err}", spec.kid))?;
                if signer.is_none() {
                    let mut header = Header::new(spec.algorithm);
                    header.kid = Some(spec.kid.clone());
                    signer = Some(SignKey { encoding, header });
                }
            }
            let key = VerifyKey {
                kid: Some(spec.kid.clone()),
                algorithm: spec.algorithm,
                decoding,
                validation: validation(spec.algorithm),
            };
            if by_kid.insert(spec.kid.clone(), key).is_some() {
                return Err(format!("key id {:?} appears more than once", spec.kid));
            }
        }
        let hmac = secret.map(|secret| VerifyKey {
            kid: None,
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
        });
        let signer = match (signer, secret) {
            (Some(signer), _) => signer,
            (None, Some(secret)) => SignKey {
                encoding: EncodingKey::from_secret(secret),
                header: Header::new(Algorithm::HS256),
            },
            (None, None) => {
                return Err(
                    "no signing key: set secret_file or give a [[jwt.keys]] entry a private_key"
                        .into(),
                );
            }
        };
        Ok(JwtKeys {
            signer,
            hmac,
            by_kid,
            issuer: issuer.to_owned(),
            ttl,
            leeway: i64::try_from(leeway).unwrap_or(i64::MAX),
        })
    }

    /// Whether tokens are signed with a private key (verifiable by anyone
    /// with the JWKS) rather than the HS256 secret.
    pub fn signs_asymmetrically(&self) -> bool {
        self.signer.header.alg != Algorithm::HS256
    }

    /// Signs `claims` with the signing key under JOSE header `typ`, for
    /// tokens that are not login tokens (verification here refuses any
    /// `typ` but `JWT`, RFC 8725 section 3.11).
    pub fn sign_typed<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = self.signer.header.clone();
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.signer.encoding)
    }

    /// The issuer of the tokens these keys sign.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The configured token lifetime.
    pub fn default_ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a token for `user` valid for `ttl` (the configured one when `None`).
    pub fn issue(
        &self,
        user: &str,
        roles: &[String],
        generation: i64,
        ttl: Option<Duration>,
        now: i64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let ttl = i64::try_from(ttl.unwrap_or(self.ttl).as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: user.to_owned(),
            roles: roles.to_vec(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            r#gen: generation,
        };
        let token = jsonwebtoken::encode(&self.signer.header, &claims, &self.signer.encoding)?;
        Ok((token, claims))
    }

    /// Verifies key, algorithm, signature, `typ`, `exp`, `nbf`, `iat` and
    /// `iss`, every time ([`TokenVerifier`] remembers tokens verified).
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLong);
        }
        Ok(Arc::new(VerifiedToken::new(
            self.verify_signed(token, now)?,
        )))
    }

    /// The full check: key, algorithm, signature and claims.
    fn verify_signed(&self, token: &str, now: i64) -> Result<Claims, TokenRejection> {
        refuse_crit(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(TokenRejection::Malformed);
        }
        let key = match &header.kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.hmac.as_ref().or_else(|| {
                let mut keys = self.by_kid.values();
                match (keys.next(), keys.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }),
        }
        .ok_or(TokenRejection::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(TokenRejection::BadSignature);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|err| rejection_of(&err))?;
        let claims = data.claims;
        // jsonwebtoken does not look at `iat`; a token from the future is refused.
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }

    /// The public verification keys as an RFC 7517 JWK set (HS256 secrets
    /// are never published).
    pub fn jwks(&self) -> serde_json::Value {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort_unstable();
        let keys: Vec<serde_json::Value> = kids
            .into_iter()
            .filter_map(|kid| {
                let key = &self.by_kid[kid];
                let mut jwk = Jwk::from_decoding_key(&key.decoding, Some(key.algorithm)).ok()?;
                jwk.common.key_id = key.kid.clone();
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                serde_json::to_value(jwk).ok()
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// Refuses a token whose JOSE header has a `crit` member at all.
///
/// RFC 7515 §4.1.11: a recipient must refuse a token naming a critical
/// extension it does not understand, and this gateway understands none; an
/// empty or non-array `crit` is malformed, so it is refused too. jsonwebtoken
/// 11 parses `crit` but never checks it (and reads `"crit": null` as absent),
/// so the header is read here as a JSON object: any member named `crit`,
/// whatever its value or escaping, refuses the token. Runs only on the full
/// check, never on a verified-token cache hit, which only such checked
/// tokens reach.
pub fn refuse_crit(token: &str) -> Result<(), TokenRejection> {
    use base64::Engine;
    let segment = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenRejection::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)?;
    if header.contains_key("crit") {
        return Err(TokenRejection::CriticalExtension);
    }
    Ok(())
}

/// The rejection for a jsonwebtoken error.
pub fn rejection_of(err: &jsonwebtoken::errors::Error) -> TokenRejection {
    match err.kind() {
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenRejection::WrongAudience,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenRejection::BadSignature,
        _ => TokenRejection::Malformed,
    }
}

fn decoding_key(
    algorithm: Algorithm,
    pem: &[u8],
) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        _ => DecodingKey::from_ed_pem(pem),
    }
}

fn encoding_key(
    algorithm: Algorithm,
    pem: &[u8],
) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_ed_pem(pem),
    }
}

/// Signs a probe with the private key and checks it with the public key, so
/// a mismatched pair is a config error instead of tokens nobody accepts.
fn check_pair(
    encoding: &EncodingKey,
    decoding: &DecodingKey,
    algorithm: Algorithm,
) -> Result<(), String> {
    let probe = serde_json::json!({ "sub": "probe", "exp": i64::MAX / 2 });
    let token = jsonwebtoken::encode(&Header::new(algorithm), &probe, encoding)
        .map_err(|err| format!("cannot sign with the private key: {err}"))?;
    let mut validation = Validation::new(algorithm);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<serde_json::Value>(&token, decoding, &validation)
        .map(|_| ())
        .map_err(|_| "the private key does not match the public key".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenRevocations;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::try_new("authgate", Duration::from_secs(3600), 30, Some(SECRET), &[]).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({
            "sub": "alice", "roles": ["admin"], "iat": now, "nbf": now,
            "exp": now + 600, "iss": "authgate", "jti": "j1", "gen": 7
        })
    }

    #[test]
    fn issued_tokens_verify_with_all_claims() {
        let keys = keys();
        let now = now();
        let (token, issued) = keys
            .issue("alice", &["admin".into()], 7, None, now)
            .unwrap();
        let verified = keys.verify(&token, now).unwrap();
        assert_eq!(*verified.user, *"alice");
        assert_eq!(*verified.roles, ["admin".to_owned()]);
        let verified = &verified.claims;
        assert_eq!(*verified, issued);
        assert_eq!(verified.exp - verified.iat, 3600);
        assert_eq!(verified.roles, vec!["admin"]);
        assert_eq!(verified.r#gen, 7);
        assert!(!verified.jti.is_empty());
    }

    #[test]
    fn claim_checks() {
        let keys = keys();
        let now = now();
        let mut expired = claims(now);
        expired["exp"] = (now - 120).into();
        let mut early = claims(now);
        early["nbf"] = (now + 600).into();
        let mut future_iat = claims(now);
        future_iat["iat"] = (now + 600).into();
        let mut wrong_iss = claims(now);
        wrong_iss["iss"] = "someone-else".into();
        let mut no_exp = claims(now);
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut within_leeway = claims(now);
        within_leeway["exp"] = (now - 10).into();
        let cases = [
            (sign(&expired, SECRET), Err(TokenRejection::Expired)),
            (sign(&early, SECRET), Err(TokenRejection::NotYetValid)),
            (sign(&future_iat, SECRET), Err(TokenRejection::NotYetValid)),
            (sign(&wrong_iss, SECRET), Err(TokenRejection::WrongIssuer)),
            (sign(&no_exp, SECRET), Err(TokenRejection::Malformed)),
            (
                sign(&claims(now), b"another-secret-another-secret-xx"),
                Err(TokenRejection::BadSignature),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(keys.verify(&token, now).map(|_| ()), expected);
        }
        assert!(keys.verify(&sign(&within_leeway, SECRET), now).is_ok());
    }

    #[test]
    fn algorithm_comes_from_config_not_from_the_token() {
        let keys = keys();
        let now = now();
        let body = URL_SAFE_NO_PAD.encode(claims(now).to_string());
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let head = URL_SAFE_NO_PAD.encode(header);
            let unsigned = format!("{head}.{body}.");
            assert!(keys.verify(&unsigned, now).is_err(), "{header}");
        }
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims(now),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys.verify(&hs384, now), Err(TokenRejection::BadSignature));
    }

    #[test]
    fn garbage_and_oversized_tokens() {
        let keys = keys();
        let now = now();
        for token in ["", ".", "..", "a.b.c", "not a token", &".".repeat(10_000)] {
            assert!(keys.verify(token, now).is_err(), "{token:.20}");
        }
        assert_eq!(
            keys.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), now),
            Err(TokenRejection::TooLong)
        );
        let (token, _) = keys.issue("alice", &[], 1, None, now).unwrap();
        // Change a character inside the signature (the last one may carry
        // only padding bits).
        let mut bytes = token.into_bytes();
        let at = bytes.len() - 5;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            keys.verify(&tampered, now),
            Err(TokenRejection::BadSignature)
        );
    }

    /// Key pairs made with the system's openssl, in PEM (PKCS#8 private).
    fn openssl_pair(dir: &std::path::Path, name: &str, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let status = std::process::Command::new("openssl")
            .args(["genpkey", "-out"])
            .arg(&private)
            .args(args)
            .status()
            .expect("openssl must be installed for these tests");
        assert!(status.success());
        let status = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(status.success());
        (
            std::fs::read(private).unwrap(),
            std::fs::read(public).unwrap(),
        )
    }

    struct Pairs {
        es: (Vec<u8>, Vec<u8>),
        rs: (Vec<u8>, Vec<u8>),
        ed: (Vec<u8>, Vec<u8>),
    }

    fn pairs() -> &'static Pairs {
        static PAIRS: std::sync::OnceLock<Pairs> = std::sync::OnceLock::new();
        PAIRS.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            Pairs {
                es: openssl_pair(
                    dir.path(),
                    "es",
                    &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                ),
                rs: openssl_pair(
                    dir.path(),
                    "rs",
                    &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                ),
                ed: openssl_pair(dir.path(), "ed", &["-algorithm", "ed25519"]),
            }
        })
    }

    fn spec(kid: &str, algorithm: Algorithm, pair: &(Vec<u8>, Vec<u8>), private: bool) -> KeySpec {
        KeySpec {
            kid: kid.into(),
            algorithm,
            private_pem: private.then(|| pair.0.clone()),
            public_pem: pair.1.clone(),
        }
    }

    fn asymmetric(secret: Option<&[u8]>, specs: &[KeySpec]) -> JwtKeys {
        JwtKeys::try_new("authgate", Duration::from_secs(600), 30, secret, specs).unwrap()
    }

    /// `header` (raw JSON) and `claims`, correctly signed with `key`.
    fn sign_raw(
        header: &str,
        claims: &serde_json::Value,
        key: &EncodingKey,
        alg: Algorithm,
    ) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn any_crit_header_is_refused_on_every_key_kind() {
        let p = pairs();
        let now = now();
        let hmac = keys();
        let es = asymmetric(None, &[spec("es", Algorithm::ES256, &p.es, true)]);
        let hs_key = EncodingKey::from_secret(SECRET);
        let es_key = EncodingKey::from_ec_pem(&p.es.0).unwrap();
        let crits = [
            (
                r#""crit":["x-unknown"],"x-unknown":1"#,
                TokenRejection::CriticalExtension,
            ),
            (r#""crit":["exp"]"#, TokenRejection::CriticalExtension),
            (r#""crit":[]"#, TokenRejection::CriticalExtension),
            (r#""crit":"x-unknown""#, TokenRejection::CriticalExtension),
            (r#""crit":null"#, TokenRejection::CriticalExtension),
            (
                r#""cr\u0069t":["x-unknown"]"#,
                TokenRejection::CriticalExtension,
            ),
        ];
        for (keys, key, alg, kid) in [
            (&hmac, &hs_key, Algorithm::HS256, ""),
            (&es, &es_key, Algorithm::ES256, r#","kid":"es""#),
        ] {
            let alg_name = format!("{alg:?}");
            let plain = format!(r#"{{"alg":"{alg_name}","typ":"JWT"{kid}}}"#);
            // Control: the same header without crit verifies.
            assert!(
                keys.verify(&sign_raw(&plain, &claims(now), key, alg), now)
                    .is_ok()
            );
            for (member, expected) in crits {
                let header = format!(r#"{{"alg":"{alg_name}","typ":"JWT"{kid},{member}}}"#);
                let token = sign_raw(&header, &claims(now), key, alg);
                assert_eq!(
                    keys.verify(&token, now).map(|_| ()),
                    Err(expected),
                    "{header}"
                );
                // Refused again, not let in by the verified-token cache.
                assert_eq!(
                    keys.verify(&token, now).map(|_| ()),
                    Err(expected),
                    "{header}"
                );
            }
        }
        assert_eq!(refuse_crit("not a token"), Err(TokenRejection::Malformed));
    }

    #[test]
    fn each_asymmetric_algorithm_signs_and_verifies_with_its_kid() {
        let p = pairs();
        let now = now();
        for (kid, algorithm, pair) in [
            ("es", Algorithm::ES256, &p.es),
            ("rs", Algorithm::RS256, &p.rs),
            ("ed", Algorithm::EdDSA, &p.ed),
        ] {
            let keys = asymmetric(None, &[spec(kid, algorithm, pair, true)]);
            let (token, _) = keys.issue("alice", &[], 1, None, now).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, algorithm);
            assert_eq!(header.kid.as_deref(), Some(kid));
            assert!(keys.verify(&token, now).is_ok(), "{kid}");
        }
    }

    #[test]
    fn verify_only_keys_accept_tokens_of_the_key_holder() {
        let p = pairs();
        let now = now();
        let old = asymmetric(None, &[spec("2026-10", Algorithm::ES256, &p.es, true)]);
        let (token, _) = old.issue("alice", &[], 1, None, now).unwrap();
        // Rotation: a new signer first, the old key kept to verify.
        let rotated = asymmetric(
            None,
            &[
                spec("2026-11", Algorithm::EdDSA, &p.ed, true),
                spec("2026-10", Algorithm::ES256, &p.es, false),
            ],
        );
        assert!(rotated.verify(&token, now).is_ok());
        let (fresh, _) = rotated.issue("alice", &[], 1, None, now).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some("2026-11")
        );
    }

    #[test]
    fn kid_and_algorithm_rules() {
        let p = pairs();
        let now = now();
        let keys = asymmetric(
            None,
            &[
                spec("es", Algorithm::ES256, &p.es, true),
                spec("rs", Algorithm::RS256, &p.rs, true),
            ],
        );
        let claims = claims(now);
        let sign = |alg: Algorithm, kid: Option<&str>, pem: &[u8]| {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
                _ => EncodingKey::from_secret(pem),
            };
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        // Unknown kid, and a kid with path characters, name no key.
        assert_eq!(
            keys.verify(&sign(Algorithm::ES256, Some("nope"), &p.es.0), now),
            Err(TokenRejection::UnknownKey)
        );
        assert_eq!(
            keys.verify(
                &sign(Algorithm::ES256, Some("../../etc/passwd"), &p.es.0),
                now
            ),
            Err(TokenRejection::UnknownKey)
        );
        // Several keys: a token must say which.
        assert_eq!(
            keys.verify(&sign(Algorithm::ES256, None, &p.es.0), now),
            Err(TokenRejection::UnknownKey)
        );
        // The RSA key's token presented under the EC key's id.
        assert_eq!(
            keys.verify(&sign(Algorithm::RS256, Some("es"), &p.rs.0), now),
            Err(TokenRejection::BadSignature)
        );
        // HS/RS confusion: HMAC with the public key as secret.
        assert_eq!(
            keys.verify(&sign(Algorithm::HS256, Some("rs"), &p.rs.1), now),
            Err(TokenRejection::BadSignature)
        );
        assert_eq!(
            keys.verify(&sign(Algorithm::HS256, None, &p.rs.1), now),
            Err(TokenRejection::UnknownKey)
        );
        // With an HS256 secret configured too, a kid-less HMAC token is checked
        // against that secret only, never against a public key.
        let mixed = asymmetric(Some(SECRET), &[spec("rs", Algorithm::RS256, &p.rs, true)]);
        assert_eq!(
            mixed.verify(&sign(Algorithm::HS256, None, &p.rs.1), now),
            Err(TokenRejection::BadSignature)
        );
        assert!(
            mixed
                .verify(&sign(Algorithm::HS256, None, SECRET), now)
                .is_ok()
        );
        assert_eq!(
            mixed.verify(&sign(Algorithm::HS256, Some("rs"), SECRET), now),
            Err(TokenRejection::BadSignature)
        );
        // A typ other than JWT is refused.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("es".into());
        header.typ = Some("secevent+jwt".into());
        let odd = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(&p.es.0).unwrap(),
        )
        .unwrap();
        assert_eq!(keys.verify(&odd, now), Err(TokenRejection::Malformed));
    }

    #[test]
    fn jwks_publishes_public_keys_only() {
        let p = pairs();
        let keys = asymmetric(
            Some(SECRET),
            &[
                spec("es", Algorithm::ES256, &p.es, true),
                spec("ed", Algorithm::EdDSA, &p.ed, false),
                spec("rs", Algorithm::RS256, &p.rs, false),
            ],
        );
        let set = keys.jwks();
        let list = set["keys"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        let by_kid = |kid: &str| list.iter().find(|k| k["kid"] == kid).unwrap().clone();
        let es = by_kid("es");
        assert_eq!(
            (es["kty"].as_str(), es["crv"].as_str(), es["alg"].as_str()),
            (Some("EC"), Some("P-256"), Some("ES256"))
        );
        assert!(es["x"].is_string() && es["y"].is_string() && es.get("d").is_none());
        assert_eq!(es["use"], "sig");
        let ed = by_kid("ed");
        assert_eq!(
            (ed["kty"].as_str(), ed["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        let rs = by_kid("rs");
        assert_eq!(rs["kty"], "RSA");
        assert!(rs["n"].is_string() && rs["e"].is_string() && rs.get("d").is_none());
        // The published key verifies tokens the gateway signs.
        let (token, _) = keys.issue("alice", &[], 1, None, now()).unwrap();
        let jwk: Jwk = serde_json::from_value(es).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&["authgate"]);
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &DecodingKey::from_jwk(&jwk).unwrap(),
                &validation
            )
            .is_ok()
        );
        // HS256 alone publishes nothing.
        assert_eq!(
            super::tests::keys().jwks(),
            serde_json::json!({ "keys": [] })
        );
    }

    #[test]
    fn bad_key_configs_are_refused() {
        let p = pairs();
        let mismatched = KeySpec {
            kid: "x".into(),
            algorithm: Algorithm::ES256,
            private_pem: Some(p.es.0.clone()),
            public_pem: {
                let dir = tempfile::tempdir().unwrap();
                openssl_pair(
                    dir.path(),
                    "other",
                    &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                )
                .1
            },
        };
        let err =
            JwtKeys::try_new("i", Duration::from_secs(60), 0, None, &[mismatched]).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let wrong_type = spec("x", Algorithm::RS256, &p.es, false);
        assert!(
            JwtKeys::try_new("i", Duration::from_secs(60), 0, Some(SECRET), &[wrong_type]).is_err()
        );
        let verify_only = spec("x", Algorithm::ES256, &p.es, false);
        let err =
            JwtKeys::try_new("i", Duration::from_secs(60), 0, None, &[verify_only]).unwrap_err();
        assert!(err.contains("no signing key"), "{err}");
        let twice = [
            spec("a", Algorithm::ES256, &p.es, true),
            spec("a", Algorithm::EdDSA, &p.ed, true),
        ];
        assert!(JwtKeys::try_new("i", Duration::from_secs(60), 0, None, &twice).is_err());
    }

    #[test]
    fn verified_tokens_are_remembered_until_they_expire() {
        let keys = TokenVerifier::new(Arc::new(keys()));
        let now = now();
        let (token, issued) = keys
            .keys()
            .issue("alice", &[], 1, Some(Duration::from_secs(60)), now)
            .unwrap();
        assert_eq!(keys.verify(&token, now).unwrap().claims, issued);
        assert_eq!(keys.verified.len(), 1);
        assert_eq!(keys.verify(&token, now + 10).unwrap().claims, issued);
        // Past exp + leeway the cached entry answers Expired and goes.
        assert_eq!(
            keys.verify(&token, now + 60 + 31),
            Err(TokenRejection::Expired)
        );
        assert!(keys.verified.is_empty());
        // Refused tokens are never remembered.
        assert!(keys.verify("a.b.c", now).is_err());
        assert!(keys.verified.is_empty());
    }

    #[test]
    fn revocations_empty_the_cache_for_their_user_or_token() {
        let keys = TokenVerifier::new(Arc::new(keys()));
        let now = now();
        let (alice_1, _) = keys.keys().issue("alice", &[], 1, None, now).unwrap();
        let (alice_2, _) = keys.keys().issue("alice", &[], 1, None, now).unwrap();
        let (bob, bob_claims) = keys.keys().issue("bob", &[], 1, None, now).unwrap();
        for token in [&alice_1, &alice_2, &bob] {
            keys.verify(token, now).unwrap();
        }
        assert_eq!(keys.verified.len(), 3);
        keys.verified.forget_user("alice");
        assert_eq!(keys.verified.len(), 1);
        assert!(keys.verified.contains_key(bob.as_str()));
        keys.verified.forget_token_id(&bob_claims.jti);
        assert!(keys.verified.is_empty());
        // Forgotten tokens are still good: the next request checks them in full.
        assert!(keys.verify(&alice_1, now).is_ok());
    }
}
