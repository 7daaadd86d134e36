//! `/v1.0/accesskeys`: list, create, get, rename and revoke access keys.
//!
//! Reading works with a JWT or an access key; creating, changing and
//! deleting need a JWT, so a leaked key cannot mint more keys. Role `admin`
//! sees and manages every user's keys; others only their own, and another
//! user's key is answered as not found.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Context, caller, json, read_json};
use crate::auth::accesskey::{FieldProblem, KeyField};
use crate::auth::throttle::address_block;
use crate::auth::{AuthMethod, StoreUser, accesskey};
use crate::body::Body;
use crate::clock::{rfc3339, unix_now};
use crate::error::GatewayError;
use crate::ratelimit::{Decision, Subject};
use crate::scope::{KeyRateLimit, KeyScope};
use crate::store::{AccessKey, Change, KeyUpdate};

/// Keys per page when `page_size` is not given, and the most allowed.
const MAX_PAGE_SIZE: i64 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    detail: String,
    expire: Option<serde_json::Value>,
    /// Omitted or `null`: the key follows its owner's roles.
    roles: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    path_prefixes: Option<Vec<String>>,
    /// A key's own budget, `{"rate": R, "burst": B}`, or `null` (read as
    /// a value so that every wrong shape is answered naming the field).
    rate_limit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    name: Option<String>,
    detail: Option<String>,
    /// `false` disables the key, `true` enables it again (read as a value
    /// so that a wrong type is answered naming the field).
    enabled: Option<serde_json::Value>,
    // Present only to be refused: a scope is fixed at creation.
    roles: Option<serde_json::Value>,
    methods: Option<serde_json::Value>,
    path_prefixes: Option<serde_json::Value>,
}

/// The accesskey object of the contract (never the key itself).
fn view(key: &AccessKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "user": key.username,
        "name": key.name,
        "detail": key.detail,
        "token_prefix": key.token_prefix,
        "tm_expire": rfc3339(key.tm_expire),
        "tm_create": rfc3339(key.tm_create),
        "tm_update": rfc3339(key.tm_update),
        "tm_last_used": key.tm_last_used.map(rfc3339).unwrap_or_default(),
        "roles": key.scope.roles,
        "methods": key.scope.methods,
        "path_prefixes": key.scope.path_prefixes,
        "enabled": key.enabled,
        "uses": key.uses,
        "tm_rerolled": key.tm_rerolled.map(rfc3339).unwrap_or_default(),
        "rate_limit": key.rate_limit.map(|limit| serde_json::json!({
            "rate": limit.rate,
            "burst": limit.burst,
        })),
    })
}

/// A refused field as the API answers it: 400 `INVALID_NAME`,
/// `INVALID_DETAIL`, or `INVALID_FIELD` for the others.
fn refused(problem: FieldProblem) -> GatewayError {
    match problem.field {
        KeyField::Name => GatewayError::InvalidName(problem.message),
        KeyField::Detail => GatewayError::InvalidDetail(problem.message),
        _ => GatewayError::InvalidArgument(problem.message),
    }
}

/// `rate_limit` of a create: absent or `null` is none; otherwise exactly
/// `{"rate": number, "burst": whole number}`.
fn rate_limit_field(
    value: Option<&serde_json::Value>,
) -> Result<Option<KeyRateLimit>, GatewayError> {
    let fields = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Object(fields)) => fields,
        Some(_) => {
            return Err(GatewayError::InvalidArgument(
                "rate_limit must be an object {\"rate\": R, \"burst\": B} or null",
            ));
        }
    };
    if fields.keys().any(|name| name != "rate" && name != "burst") {
        return Err(GatewayError::InvalidArgument(
            "rate_limit takes only the fields rate and burst",
        ));
    }
    let rate = fields.get("rate").and_then(serde_json::Value::as_f64);
    let burst = fields.get("burst").and_then(serde_json::Value::as_u64);
    accesskey::check_rate_limit(rate, burst)
        .map(Some)
        .map_err(refused)
}

/// Makes this process's cache forget every hash a key was known by (the
/// same eviction other processes apply when they read the change log).
fn evict(ctx: &Context<'_>, hashes: Vec<String>) {
    for hash_hex in hashes {
        ctx.gateway.cache.apply(&Change::Key(hash_hex));
    }
}

/// A caller of these endpoints: a user in the store. Every endpoint here
/// goes through [`owner`], so an external provider's subject (which may
/// share a store user's name) reaches none of them.
struct Owner {
    user: StoreUser,
    admin: bool,
}

/// Whose keys the caller may see: `None` for admins (everyone's).
fn scope(owner: &Owner) -> Option<&str> {
    (!owner.admin).then_some(owner.user.name())
}

/// The caller, as a store user; 403 `STORE_USER_REQUIRED` for an external
/// identity (a `[[jwt.jwks]]` token), whatever its roles.
async fn owner(request: &Request<Incoming>, ctx: &Context<'_>) -> Result<Owner, GatewayError> {
    let identity = caller(request, ctx).await?;
    let user = identity.store_user()?.clone();
    Ok(Owner {
        admin: identity.is_admin(),
        user,
    })
}

/// The caller of a write: JWTs only.
async fn writer(request: &Request<Incoming>, ctx: &Context<'_>) -> Result<Owner, GatewayError> {
    let identity = caller(request, ctx).await?;
    let user = identity.store_user()?.clone();
    if identity.method == AuthMethod::AccessKey {
        return Err(GatewayError::AccessKeyNotAllowed);
    }
    Ok(Owner {
        admin: identity.is_admin(),
        user,
    })
}

fn check_id(id: &str) -> Result<(), GatewayError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| GatewayError::InvalidId)
}

/// `GET /v1.0/accesskeys?page_size=N&page_token=T`, newest first.
pub async fn list(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = owner(&request, ctx).await?;
    let mut page_size = MAX_PAGE_SIZE;
    let mut before: Option<String> = None;
    for (name, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        match &*name {
            "page_size" => {
                page_size = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or(GatewayError::InvalidArgument(
                        "page_size must be a number from 1 to 100",
                    ))?;
            }
            "page_token" if !value.is_empty() => {
                before = Some(decode_page_token(&value)?);
            }
            _ => {}
        }
    }
    let mut keys = ctx
        .gateway
        .store
        .keys(scope(&identity), before.as_deref(), page_size + 1)
        .await?;
    let more = keys.len() as i64 > page_size;
    keys.truncate(page_size as usize);
    let next_page_token = match keys.last() {
        Some(last) if more => URL_SAFE_NO_PAD.encode(&last.id),
        _ => String::new(),
    };
    let result: Vec<_> = keys.iter().map(view).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "result": result, "next_page_token": next_page_token }),
    ))
}

fn decode_page_token(token: &str) -> Result<String, GatewayError> {
    const BAD: GatewayError =
        GatewayError::InvalidArgument("page_token is not one this gateway issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BAD)?;
    let id = String::from_utf8(bytes).map_err(|_| BAD)?;
    uuid::Uuid::parse_str(&id).map_err(|_| BAD)?;
    Ok(id)
}

/// `POST /v1.0/accesskeys {"name","detail","expire","roles","methods",
/// "path_prefixes","rate_limit"}`: the only answer that carries the key
/// itself (`token`).
pub async fn create(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = writer(&request, ctx).await?;
    let body: CreateRequest = read_json(request, ctx).await?;
    let expire = accesskey::check_expire(body.expire.as_ref().and_then(serde_json::Value::as_i64))
        .map_err(refused)?;
    accesskey::check_labels(&body.name, &body.detail).map_err(refused)?;
    let rate_limit = rate_limit_field(body.rate_limit.as_ref())?;
    let scope = KeyScope {
        roles: body.roles,
        methods: body.methods.unwrap_or_default(),
        path_prefixes: body.path_prefixes.unwrap_or_default(),
    };
    accesskey::check_scope(&scope).map_err(refused)?;
    let request = accesskey::KeyRequest {
        owner: &identity.user,
        name: &body.name,
        detail: &body.detail,
        expires_in: expire,
        scope: &scope,
        rate_limit,
        max_per_user: ctx.gateway.config.accesskeys.max_per_user,
    };
    let issued = accesskey::issue(&ctx.gateway.store, request, unix_now()).await?;
    ctx.gateway.metrics.keys_created();
    let mut value = view(&issued.stored);
    value["token"] = serde_json::Value::String(issued.key);
    Ok(json(StatusCode::OK, &value))
}

/// `GET /v1.0/accesskeys/{id}`.
pub async fn get(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let identity = owner(&request, ctx).await?;
    check_id(id)?;
    let key = ctx.gateway.store.key(id, scope(&identity)).await?;
    Ok(json(StatusCode::OK, &view(&key)))
}

/// `PUT /v1.0/accesskeys/{id} {"name","detail","enabled"}`; a field left
/// out keeps its value. Disabling or enabling evicts the key from every
/// replica's cache through the change log.
pub async fn update(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let identity = writer(&request, ctx).await?;
    check_id(id)?;
    let body: UpdateRequest = read_json(request, ctx).await?;
    if body.roles.is_some() || body.methods.is_some() || body.path_prefixes.is_some() {
        return Err(GatewayError::InvalidArgument(
            "a key's roles, methods and path_prefixes are fixed when it is created",
        ));
    }
    let enabled = match body.enabled {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(enabled)) => Some(enabled),
        Some(_) => {
            return Err(GatewayError::InvalidArgument(
                "enabled must be true or false",
            ));
        }
    };
    let store = &ctx.gateway.store;
    let current = store.key(id, scope(&identity)).await?;
    let name = body.name.unwrap_or(current.name);
    let detail = body.detail.unwrap_or(current.detail);
    accesskey::check_labels(&name, &detail).map_err(refused)?;
    let update = KeyUpdate {
        name: &name,
        detail: &detail,
        enabled,
    };
    let (key, hashes) = store
        .update_key(id, scope(&identity), update, unix_now())
        .await?;
    evict(ctx, hashes);
    Ok(json(StatusCode::OK, &view(&key)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerollRequest {
    /// Seconds the replaced secret keeps working (read as a value so that
    /// a wrong type is answered naming the field).
    grace: Option<serde_json::Value>,
}

/// `POST /v1.0/accesskeys/{id}/reroll {"grace": SECONDS}` (JWT only): a new
/// secret for the same key, shown only in this answer (`token`). The one it
/// replaces works until `grace` has passed, on every replica, then never
/// again.
pub async fn reroll(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let identity = writer(&request, ctx).await?;
    check_id(id)?;
    let body: RerollRequest = read_json(request, ctx).await?;
    let grace = match body.grace {
        None | Some(serde_json::Value::Null) => 0,
        Some(value) => accesskey::check_grace(value.as_i64()).map_err(refused)?,
    };
    let (key, hash_hex, prefix) = accesskey::fresh_secret();
    let (stored, hashes) = ctx
        .gateway
        .store
        .reroll_key(id, scope(&identity), &hash_hex, &prefix, grace, unix_now())
        .await?;
    evict(ctx, hashes);
    let mut value = view(&stored);
    value["token"] = serde_json::Value::String(key);
    Ok(json(StatusCode::OK, &value))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    token: Option<serde_json::Value>,
}

/// `POST /v1.0/accesskeys/revoke {"token": "ag_..."}`, with no other
/// credential (holding the key is the proof): the key is deleted at once,
/// whichever of its secrets was given. 200 `{"revoked": true, "id"}`, or
/// `{"revoked": false}` for a key that is unknown (or not a key at all).
/// Bounded per client address (429 `TOO_MANY_ATTEMPTS`).
pub async fn revoke(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let ip = ctx.address;
    let subject = Subject::Address(address_block(ip));
    if let Decision::Limited { retry_after, .. } = ctx.gateway.revoke_bound.check(&subject) {
        return Err(GatewayError::TooManyAttempts {
            retry_after: retry_after.as_secs().max(1),
        });
    }
    let body: RevokeRequest = read_json(request, ctx).await?;
    let key = match body.token {
        Some(serde_json::Value::String(key)) => key,
        _ => {
            return Err(GatewayError::InvalidArgument(
                "token must be the access key (a string starting ag_)",
            ));
        }
    };
    // A mistyped or made-up key is no key: answered without the store.
    let revoked = if accesskey::well_formed(&key) {
        let hash_hex = hex::encode(accesskey::hash(&key));
        ctx.gateway
            .store
            .revoke_key_by_hash(&hash_hex, unix_now())
            .await?
    } else {
        None
    };
    let answer = match revoked {
        Some((id, hashes)) => {
            evict(ctx, hashes);
            // The audit trail: which key, from where; never the key.
            tracing::info!(key.id = %id, client.addr = %ip, "access key revoked by value");
            serde_json::json!({ "revoked": true, "id": id })
        }
        None => serde_json::json!({ "revoked": false }),
    };
    Ok(json(StatusCode::OK, &answer))
}

/// `DELETE /v1.0/accesskeys/{id}`: the key stops working at once.
pub async fn delete(
    request: Request<Incoming>,
    ctx: &Context<'_>,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    let identity = writer(&request, ctx).await?;
    check_id(id)?;
    let (key, hashes) = ctx
        .gateway
        .store
        .delete_key(id, scope(&identity), unix_now())
        .await?;
    evict(ctx, hashes);
    Ok(json(StatusCode::OK, &view(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = uuid::Uuid::now_v7().to_string();
        let token = URL_SAFE_NO_PAD.encode(&id);
        assert_eq!(decode_page_token(&token).unwrap(), id);
        for bad in ["!!", "aGVsbG8", &URL_SAFE_NO_PAD.encode("' OR 1=1 --")] {
            assert!(decode_page_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(check_id("0190c0de-0000-7000-8000-000000000000").is_ok());
        assert_eq!(check_id("42").unwrap_err(), GatewayError::InvalidId);
    }
}
