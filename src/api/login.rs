//! `/auth/login`, `/auth/logout`, `/auth/onetimekey` and
//! `/auth/onetimekey/login`.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Context, caller, json, read_json};
use crate::auth::{AuthMethod, digest, password, unix_now, valid_username};
use crate::body::Body;
use crate::error::GatewayError;
use crate::proxy::headers::client_ip;
use crate::store::User;
use crate::store::cache::UserFacts;

/// Outstanding one-time keys kept per user; older ones are dropped.
const ONETIME_KEYS_PER_USER: i64 = 5;
/// Outstanding one-time keys kept in all; beyond, issuing answers 429.
const ONETIME_KEYS_TOTAL: i64 = 100_000;
/// Random bytes in a one-time key (128 bits).
const ONETIME_KEY_BYTES: usize = 16;

const WRONG_LOGIN: GatewayError = GatewayError::InvalidCredentials {
    message: "wrong username or password",
    token_given: false,
};
const WRONG_ANSWER: GatewayError = GatewayError::InvalidCredentials {
    message: "the one-time key is unknown, used or expired, or the answer is wrong",
    token_given: false,
};

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct OneTimeKeyRequest {
    username: String,
}

#[derive(Deserialize)]
struct OneTimeKeyLoginRequest {
    username: String,
    key: String,
    token: String,
}

/// Throttle subjects for a login attempt: the user and the client address.
fn subjects(username: &str, headers: &http::HeaderMap, ctx: &Context<'_>) -> [String; 2] {
    let ip = client_ip(
        ctx.client.addr.ip(),
        headers,
        &ctx.gateway.config.server.trusted_proxies,
    );
    throttle_subjects(username, ip)
}

/// The throttle rows an attempt counts against. Names that cannot be users
/// share one row, so long or random names cannot grow the table, and an
/// IPv6 client counts as its /64, which one host usually has whole.
fn throttle_subjects(username: &str, ip: std::net::IpAddr) -> [String; 2] {
    let user = if valid_username(username) {
        format!("user:{username}")
    } else {
        "user:*invalid*".to_owned()
    };
    let addr = match ip {
        std::net::IpAddr::V4(v4) => format!("addr:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let segments = v6.segments();
                let prefix = std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                );
                format!("addr:{prefix}/64")
            }
        },
    };
    [user, addr]
}

async fn check_throttle(subjects: &[String; 2], ctx: &Context<'_>) -> Result<(), GatewayError> {
    match ctx
        .gateway
        .throttle
        .locked_for(subjects, unix_now())
        .await?
    {
        Some(retry_after) => Err(GatewayError::TooManyAttempts { retry_after }),
        None => Ok(()),
    }
}

async fn fail(
    subjects: &[String; 2],
    ctx: &Context<'_>,
    kind: &'static str,
) -> Result<(), GatewayError> {
    ctx.gateway.metrics.login(kind, "failure");
    ctx.gateway.throttle.fail(subjects, unix_now()).await?;
    Ok(())
}

/// `POST /auth/login {"username","password"}`.
pub async fn login(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let headers = request.headers().clone();
    let body: LoginRequest = read_json(request, ctx).await?;
    let subjects = subjects(&body.username, &headers, ctx);
    check_throttle(&subjects, ctx).await?;
    let user = if valid_username(&body.username) {
        ctx.gateway.store.user(&body.username).await?
    } else {
        None
    };
    // Verify against a dummy hash for unknown users so both failures take
    // the same time.
    let phc = user.as_ref().map_or_else(
        || password::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = body.password;
    let matches = tokio::task::spawn_blocking(move || password::verify_password(&password, &phc))
        .await
        .map_err(|_| GatewayError::Internal)?;
    match user {
        Some(user) if matches => {
            ctx.gateway.throttle.succeed(&subjects[0]).await?;
            ctx.gateway.metrics.login("password", "success");
            issue_session(&user, ctx)
        }
        _ => {
            fail(&subjects, ctx, "password").await?;
            Err(WRONG_LOGIN)
        }
    }
}

/// The login answer: `{"username","token"}` and the `token` cookie.
fn issue_session(user: &User, ctx: &Context<'_>) -> Result<Response<Body>, GatewayError> {
    let keys = ctx.gateway.auth.jwt();
    let (token, _claims) = keys
        .issue(
            &user.username,
            &user.roles,
            user.generation,
            None,
            unix_now(),
        )
        .map_err(|_| GatewayError::Internal)?;
    ctx.gateway.cache.put_user(
        &user.username,
        Some(UserFacts {
            generation: user.generation,
        }),
        Instant::now(),
    );
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({ "username": user.username, "token": token }),
    );
    let cookie = format!(
        "token={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        keys.default_ttl().as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /auth/logout`: revokes the presented JWT until it expires.
pub async fn logout(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = caller(&request, ctx).await?;
    let (AuthMethod::Jwt, Some((jti, expires_at))) = (identity.method, identity.token) else {
        return Err(GatewayError::AccessKeyNotAllowed);
    };
    ctx.gateway
        .store
        .revoke_token(&jti, &identity.user, expires_at, unix_now())
        .await?;
    ctx.gateway.cache.revoke_token(&jti, expires_at);
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({ "username": &*identity.user, "logged_out": true }),
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("token=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// `POST /auth/onetimekey {"username"}`: the same answer for unknown users,
/// whose keys are stored too and can never succeed.
pub async fn issue_onetime_key(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let body: OneTimeKeyRequest = read_json(request, ctx).await?;
    if body.username.is_empty() || body.username.len() > 256 {
        return Err(GatewayError::InvalidArgument(
            "username must be 1 to 256 characters",
        ));
    }
    let store = &ctx.gateway.store;
    let now = unix_now();
    if store.onetime_key_count().await? >= ONETIME_KEYS_TOTAL {
        store
            .sweep(now, now - crate::gateway::CHANGE_LOG_KEEP_SECS)
            .await?;
        if store.onetime_key_count().await? >= ONETIME_KEYS_TOTAL {
            return Err(GatewayError::TooManyAttempts {
                retry_after: ctx.gateway.config.onetimekey.ttl.as_secs(),
            });
        }
    }
    let ttl = ctx.gateway.config.onetimekey.ttl.as_secs();
    let key = hex::encode(crate::auth::random_bytes::<ONETIME_KEY_BYTES>());
    let key_hash = hex::encode(crate::auth::accesskey::hash(&key));
    store
        .put_onetime_key(
            &key_hash,
            &body.username,
            now + i64::try_from(ttl).unwrap_or(i64::MAX),
            ONETIME_KEYS_PER_USER,
            now,
        )
        .await?;
    ctx.gateway.metrics.login("onetimekey_issue", "success");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "username": body.username, "key": key, "expires_in": ttl }),
    ))
}

/// `POST /auth/onetimekey/login {"username","key","token"}`: the key is
/// consumed by the first attempt, right or wrong.
pub async fn onetime_key_login(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let headers = request.headers().clone();
    let body: OneTimeKeyLoginRequest = read_json(request, ctx).await?;
    let subjects = subjects(&body.username, &headers, ctx);
    check_throttle(&subjects, ctx).await?;
    let store = &ctx.gateway.store;
    let key_hash = hex::encode(crate::auth::accesskey::hash(&body.key));
    let taken = store.take_onetime_key(&key_hash).await?;
    let now = unix_now();
    let key_valid =
        taken.is_some_and(|(owner, expires_at)| owner == body.username && expires_at > now);
    let user = if key_valid {
        store.user(&body.username).await?
    } else {
        None
    };
    let answered = user.as_ref().is_some_and(|user| {
        let expected = digest::onetime_answer(&body.key, &user.ha1);
        digest::constant_time_eq(
            expected.as_bytes(),
            body.token.to_ascii_lowercase().as_bytes(),
        )
    });
    match user {
        Some(user) if answered => {
            ctx.gateway.throttle.succeed(&subjects[0]).await?;
            ctx.gateway.metrics.login("onetimekey", "success");
            issue_session(&user, ctx)
        }
        _ => {
            fail(&subjects, ctx, "onetimekey").await?;
            Err(WRONG_ANSWER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_subjects_are_bounded() {
        let v4: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            throttle_subjects("alice", v4),
            ["user:alice".to_owned(), "addr:203.0.113.7".to_owned()]
        );
        let long = "x".repeat(60_000);
        for name in [long.as_str(), "", "a b", "a:b"] {
            assert_eq!(throttle_subjects(name, v4)[0], "user:*invalid*");
        }
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(throttle_subjects("u", a)[1], "addr:2001:db8:1:2::/64");
        assert_eq!(throttle_subjects("u", a)[1], throttle_subjects("u", b)[1]);
        let mapped: std::net::IpAddr = "::ffff:198.51.100.4".parse().unwrap();
        assert_eq!(throttle_subjects("u", mapped)[1], "addr:198.51.100.4");
    }
}
