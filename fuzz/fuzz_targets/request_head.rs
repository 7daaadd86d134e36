//! Arbitrary bytes through the gateway's request-head handling: the HTTP/1
//! head parser hyper uses (httparse), then path check, own-endpoint and
//! route matching, credential extraction, query stripping, log redaction
//! and the header rewriting done before forwarding. Nothing may panic, and
//! a rewritten head must carry no credential of ours and no client-sent
//! identity header.

#![no_main]

use std::sync::Arc;

use authgate::api::Endpoint;
use authgate::auth::extract::{Sources, extract, strip_credential_query};
use authgate::logging::redact::redact_target;
use authgate::auth::{AuthMethod, Identity, IdentityValues, Principal};
use authgate::client::ClientInfo;
use authgate::proxy::rewrite_head;
use authgate::routes::{check_path, prefix_matches};
use http::{HeaderName, HeaderValue, Request, Uri};
use libfuzzer_sys::fuzz_target;

const UPSTREAM: &str = "http://127.0.0.1:9000/base";

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    if parsed.parse(data).is_err() {
        return;
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(target);
    for header in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let sources = Sources::default();
    let path = parts.uri.path().to_owned();
    let path_ok = check_path(&path).is_ok();
    let _ = Endpoint::for_path(&path);
    let _ = prefix_matches("/public", &path);
    let _ = redact_target(&parts.uri);
    let _ = extract(&parts.headers, parts.uri.query(), &sources);
    if let Some(query) = parts.uri.query()
        && let Some(kept) = strip_credential_query(query)
    {
        assert!(extract(&http::HeaderMap::new(), Some(&kept), &sources).is_ok_and(|c| c.is_none()));
    }

    let identity = (data.len() % 2 == 0).then(|| Identity {
        principal: Principal::External {
            provider: Arc::from("fuzz-idp"),
            subject: Arc::from("fuzz"),
        },
        roles: Arc::from(vec!["a".to_owned()]),
        method: AuthMethod::Jwt,
        key_id: None,
        token: None,
        scope: None,
        rate_limit: None,
        values: Arc::new(IdentityValues::of(
            "fuzz",
            "fuzz-idp",
            &["a".to_owned()],
        )),
    });
    let client = ClientInfo::new(
        "192.0.2.1:4000".parse().unwrap(),
        data.first().is_some_and(|b| b & 1 == 1),
    );
    let upstream: Uri = UPSTREAM.parse().unwrap();
    let id = HeaderValue::from_static("fuzz-request");
    let Ok(forwarded_host) =
        authgate::proxy::headers::requested_authority(&parts.uri, &parts.headers)
    else {
        return;
    };
    if rewrite_head(
        &mut parts,
        &upstream,
        forwarded_host,
        identity.as_ref(),
        &client,
        &id,
        &sources,
    )
    .is_err()
    {
        return;
    }
    let h = &parts.headers;
    assert_eq!(h["host"], "127.0.0.1:9000");
    assert!(h.get_all(http::header::AUTHORIZATION).iter().all(|v| {
        v.to_str()
            .is_ok_and(|v| authgate::auth::extract::bearer_token(v).is_none())
    }));
    let left = extract(h, parts.uri.query(), &sources);
    assert!(
        !matches!(left, Ok(Some(_))),
        "a credential survived rewriting"
    );
    // Under any `_`/`-` folding an upstream may apply, only the gateway's
    // own identity headers are left, and no upgrade but WebSocket.
    let folded = |name: &str| name.replace('_', "-");
    assert!(h.keys().all(|name| {
        let f = folded(name.as_str());
        !(f.starts_with("x-auth-") || f == "x-client-cert-subject") || !name.as_str().contains('_')
    }));
    assert!(
        h.get_all(http::header::UPGRADE)
            .iter()
            .all(|v| v == "websocket")
    );
    let spoofed = h
        .keys()
        .filter(|name| name.as_str().starts_with("x-auth-"))
        .count();
    match &identity {
        None => assert_eq!(spoofed, 0),
        Some(_) => {
            assert_eq!(h["x-auth-user"], "fuzz");
            assert_eq!(h["x-auth-provider"], "fuzz-idp");
        }
    }
    if path_ok {
        assert_eq!(parts.uri.path(), format!("/base{path}"));
    }
});
