//! Issuing and checking JWTs (HS256, algorithm pinned by config).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// Tokens longer than this are refused before any parsing or crypto.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

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
        }
    }
}

/// Signs and verifies tokens with the configured key. Built once.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    header: Header,
    issuer: String,
    ttl: Duration,
    leeway: i64,
}

impl JwtKeys {
    /// Builds the keys from validated config.
    pub fn new(config: &JwtConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(&config.secret),
            decoding: DecodingKey::from_secret(&config.secret),
            validation,
            header: Header::new(Algorithm::HS256),
            issuer: config.issuer.clone(),
            ttl: config.ttl,
            leeway: i64::try_from(config.leeway).unwrap_or(i64::MAX),
        }
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
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, `exp`, `nbf`, `iat` and `iss`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenRejection::Expired,
                ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
                ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenRejection::BadSignature
                }
                _ => TokenRejection::Malformed,
            })?;
        let claims = data.claims;
        // jsonwebtoken does not look at `iat`; a token from the future is refused.
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(&JwtConfig {
            issuer: "authgate".into(),
            ttl: Duration::from_secs(3600),
            leeway: 30,
            secret: SECRET.to_vec(),
        })
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
        assert_eq!(verified, issued);
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
}
