//! `/_authgate/`: the admin page for access keys.
//!
//! The page is plain HTML, CSS and JavaScript modules from `assets/admin/`,
//! embedded in the binary. It talks only to the gateway's JSON API with the
//! `token` cookie that `/auth/login` (or an `[[oidc]]` sign-in) sets. Its
//! two endpoints of its own: `GET /_authgate/session`, which tells the page
//! who the cookie belongs to, so it keeps nothing in browser storage, and
//! `GET /_authgate/providers`, the external identity providers it offers
//! sign-in with. Every asset is served with a strict
//! Content-Security-Policy (no inline script or style, no framing).

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Context, caller, json};
use crate::body::{self, Body};
use crate::error::GatewayError;

/// Where the page lives.
const PAGE: &str = "/_authgate/";

/// The page's policy: its own files only, nothing inline, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// One embedded file.
struct Asset {
    /// Path under `/_authgate/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file of the page; `""` is the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../assets/admin/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/admin/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/admin/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/admin/api.js"),
    },
    Asset {
        name: "format.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/admin/format.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../assets/admin/icon.svg"),
    },
];

/// Serves everything under `/_authgate`.
pub async fn serve(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path();
    if path == "/_authgate" {
        return Ok(redirect_to_page());
    }
    let Some(name) = path.strip_prefix(PAGE) else {
        return Err(GatewayError::NotFound);
    };
    if name == "providers" {
        return match *request.method() {
            Method::GET => Ok(providers(ctx)),
            _ => Err(GatewayError::MethodNotAllowed),
        };
    }
    if name == "session" {
        return match *request.method() {
            Method::GET => session(&request, ctx).await,
            _ => Err(GatewayError::MethodNotAllowed),
        };
    }
    let asset = find(name).ok_or(GatewayError::NotFound)?;
    match *request.method() {
        Method::GET => Ok(respond(asset, body::full(asset.bytes))),
        Method::HEAD => Ok(respond(asset, body::empty())),
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

/// The embedded file called `name`, if any.
fn find(name: &str) -> Option<&'static Asset> {
    let name = if name == "index.html" { "" } else { name };
    ASSETS.iter().find(|asset| asset.name == name)
}

/// `GET /_authgate/session`: who the presented credential belongs to.
/// 401 when none is presented, as on every endpoint that needs one.
async fn session(
    request: &Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = caller(request, ctx).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "username": &**identity.user(),
            "provider": &**identity.provider(),
            "roles": &*identity.roles,
            "admin": identity.is_admin(),
            "method": identity.method.as_str(),
        }),
    ))
}

/// `GET /_authgate/providers`: the `[[oidc]]` providers the sign-in form
/// offers, with the address that starts each one's sign-in and returns here.
fn providers(ctx: &Context<'_>) -> Response<Body> {
    let providers: Vec<serde_json::Value> = ctx
        .gateway
        .oidc
        .names()
        .map(|name| {
            serde_json::json!({
                "name": name,
                "login": crate::oidc::redirect::login_location(name, PAGE),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "providers": providers }),
    )
}

/// `/_authgate` → `/_authgate/`, so relative asset URLs resolve.
fn redirect_to_page() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(PAGE));
    response
}

fn respond(asset: &Asset, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Tiny files; never caching them means a new binary never meets an old
    // script in someone's cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_and_typed() {
        assert_eq!(find("").unwrap().content_type, "text/html; charset=utf-8");
        assert_eq!(find("index.html").unwrap().name, "");
        for name in ["app.js", "api.js", "format.js"] {
            assert!(
                find(name)
                    .unwrap()
                    .content_type
                    .starts_with("text/javascript")
            );
        }
        assert!(
            find("app.css")
                .unwrap()
                .content_type
                .starts_with("text/css")
        );
        assert!(find("nope.js").is_none());
        assert!(find("session.js").is_none());
    }

    #[test]
    fn the_page_references_only_embedded_files() {
        let html = std::str::from_utf8(find("").unwrap().bytes).unwrap();
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let target = part.split('"').next().unwrap();
                if target.starts_with('#') {
                    continue;
                }
                assert!(find(target).is_some(), "{target} is not embedded");
            }
        }
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
    }

    #[test]
    fn scripts_import_only_embedded_modules() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for part in text.split("from \"./").skip(1) {
                let target = part.split('"').next().unwrap();
                assert!(find(target).is_some(), "{}: {target}", asset.name);
            }
        }
    }

    #[test]
    fn policy_forbids_framing_and_inline_code() {
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    }
}
