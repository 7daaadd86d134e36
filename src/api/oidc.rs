//! `/auth/oidc/{name}/login` and `/auth/oidc/{name}/callback`: browser
//! sign-in through an `[[oidc]]` provider. The protocol is in
//! [`crate::oidc`]; here are the cookies, the redirects and the user record.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Context;
use super::login::session_token;
use crate::auth::extract::request_cookies;
use crate::body::{self, Body};
use crate::clock::unix_now;
use crate::error::GatewayError;
use crate::oidc::{OidcProvider, SIGN_IN_TTL_SECS, STATE_COOKIE};
use crate::store::{Change, ProviderConflict};

/// The provider named in the path; 404 for an unknown name.
fn provider<'a>(ctx: &'a Context<'_>, name: &str) -> Result<&'a OidcProvider, GatewayError> {
    ctx.gateway
        .oidc
        .get(name)
        .map(|provider| &**provider)
        .ok_or(GatewayError::NotFound)
}

/// The first value of query parameter `name`, decoded.
fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A `302 Found` to `location` that no cache keeps.
fn found(location: &str) -> Result<Response<Body>, GatewayError> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(|_| GatewayError::Internal)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The state cookie: sent back only to this provider's paths, only over
/// HTTPS, never to scripts, and along with the provider's top-level
/// redirect back (`Lax`; `Strict` would be withheld on it).
fn state_cookie(provider: &OidcProvider, value: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path={}; Max-Age={max_age}",
        provider.cookie_path()
    ))
    .ok()
}

/// `GET /auth/oidc/{name}/login?rd=PATH`: 302 to the provider.
pub async fn login(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    name: &str,
) -> Result<Response<Body>, GatewayError> {
    let provider = provider(ctx, name)?;
    let rd = query_param(&request, "rd");
    let start = provider.begin(rd.as_deref(), unix_now()).await?;
    let mut response = found(&start.location)?;
    let cookie =
        state_cookie(provider, &start.cookie, SIGN_IN_TTL_SECS).ok_or(GatewayError::Internal)?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `GET /auth/oidc/{name}/callback?code&state`: the user recorded, the
/// `token` cookie set, the state cookie cleared (it serves one callback),
/// and 302 to where the sign-in started.
pub async fn callback(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    name: &str,
) -> Result<Response<Body>, GatewayError> {
    let provider = provider(ctx, name)?;
    if query_param(&request, "error").is_some() {
        ctx.gateway.metrics.login("oidc", "failure");
        return Err(GatewayError::SignInFailed(
            "the identity provider did not sign the user in",
        ));
    }
    let code = query_param(&request, "code").unwrap_or_default();
    let state = query_param(&request, "state").unwrap_or_default();
    let sealed = request_cookies(request.headers())
        .find(|(key, _)| *key == STATE_COOKIE.as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value).ok());
    let now = unix_now();
    let signed_in = match provider.finish(&code, &state, sealed, now).await {
        Ok(signed_in) => signed_in,
        Err(err) => {
            ctx.gateway.metrics.login("oidc", "failure");
            return Err(err);
        }
    };
    let user = match ctx
        .gateway
        .store
        .record_provider_user(
            &signed_in.username,
            provider.name(),
            &signed_in.subject,
            &signed_in.roles,
            now,
        )
        .await?
    {
        Ok(user) => user,
        Err(conflict) => {
            ctx.gateway.metrics.login("oidc", "failure");
            let held_by = match conflict {
                ProviderConflict::OtherHolder(_) => "a local user or another provider",
                ProviderConflict::OtherSubject => "another account of this provider",
            };
            tracing::info!(provider = provider.name(), user = %signed_in.username, held_by, "sign-in refused: the name belongs to another account");
            return Err(GatewayError::AccountConflict);
        }
    };
    // This process drops the user's cached tokens and keys at once (a
    // sign-in that took roles away made them stale); other replicas read
    // the same change from the store's log.
    ctx.gateway
        .cache
        .apply(&Change::User(user.username.clone()));
    let (_token, token_cookie) = session_token(&user, ctx)?;
    ctx.gateway.metrics.login("oidc", "success");
    tracing::info!(provider = provider.name(), user = %user.username, "signed in through the identity provider");
    ctx.audit(
        crate::audit::Event::new(crate::audit::Kind::OidcLogin)
            .by(provider.name(), &user.username)
            .on(&user.username),
    );
    let mut response = found(&signed_in.rd)?;
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, token_cookie);
    if let Some(clear) = state_cookie(provider, "", 0) {
        headers.append(header::SET_COOKIE, clear);
    }
    Ok(response)
}
