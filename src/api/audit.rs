//! `GET /v1.0/audit`: the audit log, newest first, for role `admin`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::accesskeys::{MAX_PAGE_SIZE, decode_page_token, end_page, parse_page_size};
use super::{Context, caller, json};
use crate::body::Body;
use crate::clock::parse_rfc3339;
use crate::error::GatewayError;
use crate::store::AuditQuery;
use crate::text::{MAX_NAME_CHARS, check_label};

/// What the query string asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    page_size: i64,
    before: Option<String>,
    since: Option<i64>,
    user: Option<String>,
}

/// Reads `page_size`, `page_token`, `since` (RFC 3339, inclusive) and
/// `user` (events where that name acted or was acted on).
fn filter(query: &str) -> Result<Filter, GatewayError> {
    let mut filter = Filter {
        page_size: MAX_PAGE_SIZE,
        ..Filter::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "page_size" => filter.page_size = parse_page_size(&value)?,
            "page_token" if !value.is_empty() => {
                filter.before = Some(decode_page_token(&value)?);
            }
            "since" => {
                filter.since = Some(parse_rfc3339(&value).ok_or(GatewayError::InvalidArgument(
                    "since must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
                ))?);
            }
            "user" if !value.is_empty() => {
                check_label(&value, MAX_NAME_CHARS).map_err(|_| {
                    GatewayError::InvalidArgument(
                        "user must be a name of at most 256 characters without control characters",
                    )
                })?;
                filter.user = Some(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// `GET /v1.0/audit?page_size=N&page_token=T&since=RFC3339&user=NAME`:
/// `{"result":[...],"next_page_token":"..."}`; 403 `MISSING_ROLE` without
/// role `admin`.
pub async fn list(
    request: Request<Incoming>,
    ctx: &Context<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = caller(&request, ctx).await?;
    if !identity.is_admin() {
        return Err(GatewayError::MissingRole);
    }
    let filter = filter(request.uri().query().unwrap_or(""))?;
    let mut events = ctx
        .gateway
        .store
        .audit_events(AuditQuery {
            since: filter.since,
            user: filter.user.as_deref(),
            before: filter.before.as_deref(),
            limit: filter.page_size + 1,
        })
        .await?;
    let next_page_token = end_page(&mut events, filter.page_size, |event| &event.id);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "result": events, "next_page_token": next_page_token }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_queries_are_refused() {
        for bad in [
            "since=yesterday",
            "since=2026-01-31",
            "since=",
            "page_size=0",
            "page_size=101",
            "page_size=-1",
            "page_size=ten",
            "page_token=!!",
            "page_token=aGVsbG8",
            "user=a%0Ab",
        ] {
            let err = filter(bad).unwrap_err();
            assert_eq!(err.status_name(), "INVALID_ARGUMENT", "{bad}");
        }
        let user = format!("user={}", "a".repeat(257));
        assert!(filter(&user).is_err());
    }

    #[test]
    fn good_queries_are_read() {
        let read = filter("page_size=5&since=1970-01-01T00:01:00Z&user=alice").unwrap();
        assert_eq!(
            read,
            Filter {
                page_size: 5,
                before: None,
                since: Some(60),
                user: Some("alice".into()),
            }
        );
        assert_eq!(filter("").unwrap().page_size, MAX_PAGE_SIZE);
    }
}
