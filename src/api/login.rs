//! `/auth/login`, `/auth/logout`, `/auth/onetimekey` and
//! `/auth/onetimekey/login`.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Context, caller, json, read_json};
use crate::auth::onetime::{OneTimeIssue, OneTimeRequest};
use crate::auth::throttle::{Attempt, address_subject, user_subject};
use crate::auth::{AuthMethod, digest, onetime, password};
use crate::body::Body;
use crate::clock::unix_now;
use crate::error::GatewayError;
use crate::names::valid_username;
use crate::store::User;
use crate::store::cache::UserFacts;

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

/// Admits a login attempt for `username` from the caller's address, or
/// refuses it with 429 when the user or the address is locked out.
async fn admit(username: &str, ctx: &Context<'_>) -> Result<Attempt, GatewayError> {
    let ip = ctx.address;
    let throttle = &ctx.gateway.throttle;
    match throttle
        .admit(user_subject(username), address_subject(ip))
        .await?
    {
        Ok(attempt) => Ok(attempt),
        Err(retry_after) => Err(GatewayError::TooManyAttempts { retry_after }),
    }
}

/// Counts a failed attempt; the answer is `wrong` unless the store failed.
async fn fail(
    attempt: Attempt,
    ctx: &Context<'_>,
    kind: &'static str,
    wrong: GatewayError,
) -> GatewayError {
    ctx.gateway.metrics.login(kind, "failure");
    match attempt.failed().await {
        Ok(()) => wrong,
        Err(err) => err.into(),
    }
}

/// `POST /auth/login {"username","password"}`.
pub async fn login(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let body: LoginRequest = read_json(request, ctx).await?;
    // A hashing slot first (waiting in the bounded queue if need be):
    // beyond the queue the answer costs no store round-trip and no memory.
    let permit = ctx.gateway.throttle.hashes().acquire().await.map_err(|_| {
        ctx.gateway.metrics.login("password", "busy");
        GatewayError::LoginBusy {
            retry_after: password::BUSY_RETRY_AFTER_SECS,
        }
    })?;
    let attempt = admit(&body.username, ctx).await?;
    // Users of an external provider have no password: they fail as an
    // unknown user does (same answer, same time).
    let user = if valid_username(&body.username) {
        ctx.gateway
            .store
            .user(&body.username)
            .await?
            .filter(|user| user.provider.is_none())
    } else {
        None
    };
    // Unknown users are verified against a dummy hash so both failures
    // take the same time.
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let matches = permit
        .verify(body.password, phc)
        .await
        .ok_or(GatewayError::Internal)?;
    match user {
        Some(user) if matches => {
            attempt.succeeded().await?;
            ctx.gateway.metrics.login("password", "success");
            issue_session(&user, ctx)
        }
        _ => Err(fail(attempt, ctx, "password", WRONG_LOGIN).await),
    }
}

/// The login answer: `{"username","token"}` and the `token` cookie.
fn issue_session(user: &User, ctx: &Context<'_>) -> Result<Response<Body>, GatewayError> {
    let (token, cookie) = session_token(user, ctx)?;
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({ "username": user.username, "token": token }),
    );
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// A JWT for `user` and the `token` cookie carrying it, as every login
/// gives them.
pub(super) fn session_token(
    user: &User,
    ctx: &Context<'_>,
) -> Result<(String, HeaderValue), GatewayError> {
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
    ctx.gateway
        .cache
        .put_user(&user.username, Some(UserFacts::of(user)), Instant::now());
    let cookie = format!(
        "token={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        keys.default_ttl().as_secs()
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|_| GatewayError::Internal)?;
    Ok((token, cookie))
}

/// `POST /auth/logout`: revokes the presented JWT until it expires.
pub async fn logout(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = caller(&request, ctx).await?;
    let (AuthMethod::Jwt, Some((jti, expires_at))) = (identity.method, identity.token.clone())
    else {
        return Err(GatewayError::AccessKeyNotAllowed);
    };
    ctx.gateway
        .store
        .revoke_token(&jti, identity.user(), expires_at, unix_now())
        .await?;
    ctx.gateway.cache.revoke_token(&jti, expires_at);
    let mut response = json(
        StatusCode::OK,
        &serde_json::json!({ "username": &**identity.user(), "logged_out": true }),
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("token=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}

/// `POST /auth/onetimekey {"username"}`: the same answer for unknown users;
/// 429 when the asking address holds `onetimekey.max_per_address` keys
/// (the policy is [`onetime::issue`]'s).
pub async fn issue_onetime_key(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let ip = ctx.address;
    let address = address_subject(ip);
    let body: OneTimeKeyRequest = read_json(request, ctx).await?;
    if body.username.is_empty() || body.username.len() > 256 {
        return Err(GatewayError::InvalidArgument(
            "username must be 1 to 256 characters",
        ));
    }
    let config = &ctx.gateway.config.onetimekey;
    let ttl = config.ttl.as_secs();
    let request = OneTimeRequest {
        username: &body.username,
        address: &address,
        ttl_secs: ttl,
        max_per_address: config.max_per_address,
    };
    let key = match onetime::issue(&ctx.gateway.store, request, unix_now()).await? {
        OneTimeIssue::Issued(key) => key,
        OneTimeIssue::StoreFull => {
            return Err(GatewayError::TooManyAttempts { retry_after: ttl });
        }
        OneTimeIssue::AddressFull { retry_after } => {
            ctx.gateway
                .metrics
                .login("onetimekey_issue", "address_limit");
            return Err(GatewayError::OneTimeKeysPerAddress { retry_after });
        }
    };
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
    let body: OneTimeKeyLoginRequest = read_json(request, ctx).await?;
    let attempt = admit(&body.username, ctx).await?;
    let store = &ctx.gateway.store;
    let key_hash = hex::encode(crate::auth::accesskey::hash(&body.key));
    let taken = store.take_onetime_key(&key_hash).await?;
    let now = unix_now();
    let key_valid =
        taken.is_some_and(|(owner, expires_at)| owner == body.username && expires_at > now);
    let user = if key_valid {
        // No HA1 for users of an external provider.
        store
            .user(&body.username)
            .await?
            .filter(|user| user.provider.is_none())
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
            attempt.succeeded().await?;
            ctx.gateway.metrics.login("onetimekey", "success");
            issue_session(&user, ctx)
        }
        _ => Err(fail(attempt, ctx, "onetimekey", WRONG_ANSWER).await),
    }
}
