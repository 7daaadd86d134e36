//! Forwarding to upstreams: one pooled client, built once, and the request
//! and response rewriting around it.

pub mod headers;

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::{Instrument, debug, warn};

use crate::auth::Permit;
use crate::auth::extract::{strip_credential_headers, strip_credential_query};
use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::routes::Route;
use crate::server::ServeError;

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
    /// Subject of the verified client certificate (mTLS), if one was sent.
    pub cert_subject: Option<std::sync::Arc<str>>,
}

impl ClientInfo {
    /// `X-Forwarded-Proto` value.
    pub fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// The pooled upstream client, for `http://` and `https://` upstreams.
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
}

impl Forwarder {
    /// Builds the client once: connect timeout, idle timeout with a pool
    /// timer (without one idle connections are never reaped), idle cap, and
    /// rustls for `https://` upstreams with the system's CA roots plus
    /// `upstream.ca_file`, and `upstream.client_cert` when set.
    pub fn try_new(config: &UpstreamConfig) -> Result<Self, ServeError> {
        Ok(Forwarder {
            client: pooled_client(config)?,
        })
    }

    /// Forwards a checked request to `route`'s upstream and relays the
    /// response head; bodies stream both ways.
    pub async fn forward(
        &self,
        permit: Permit,
        route: &Route,
        mut request: Request<Incoming>,
        client: ClientInfo,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let upgrading = headers::is_upgrade_request(request.headers());
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, incoming) = request.into_parts();

        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        parts.uri = upstream_uri(&route.upstream, &parts.uri)?;
        parts.version = Version::HTTP_11;

        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h, upgrading);
        strip_credential_headers(h);
        headers::remove_identity_headers(h);
        if let Some(identity) = permit.identity() {
            headers::set_identity_headers(h, identity);
        }
        headers::set_forwarded(h, client.addr.ip(), client.proto(), original_host);
        headers::set_client_cert_subject(h, client.cert_subject.as_deref());
        h.insert(headers::X_REQUEST_ID.clone(), request_id.clone());
        if let Some(authority) = route.upstream.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            h.insert(header::HOST, host);
        }

        let outbound = Request::from_parts(parts, incoming);
        let mut response = match tokio::time::timeout(route.timeout, self.client.request(outbound))
            .await
        {
            Err(_elapsed) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(err)) => {
                warn!(upstream = %route.upstream, connect = err.is_connect(), error = %err, "upstream request failed");
                return Err(GatewayError::UpstreamUnreachable);
            }
            Ok(Ok(response)) => response,
        };

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(
                splice(client_upgrade, upstream_upgrade).instrument(tracing::Span::current()),
            );
        }
        let (mut parts, incoming) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
        Ok(Response::from_parts(parts, body::stream(incoming)))
    }
}

/// A pooled HTTP(S) client with the upstream settings, for any body type.
pub fn pooled_client<B>(
    config: &UpstreamConfig,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, ServeError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(upstream_tls(config)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https))
}

/// rustls client config for `https://` upstreams.
fn upstream_tls(config: &UpstreamConfig) -> Result<rustls::ClientConfig, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let tls_error = |what: &std::path::Path, err: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{}: {err}", what.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    debug!(
        system_roots = added,
        "loaded the system's CA roots for https upstreams"
    );
    if let Some(path) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| tls_error(path, &err))?;
        for cert in certs {
            roots.add(cert).map_err(|err| tls_error(path, &err))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| ServeError::Tls(err.to_string()))?
        .with_root_certificates(roots);
    match &config.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_path, key_path)) => {
            let chain = CertificateDer::pem_file_iter(cert_path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| tls_error(cert_path, &err))?;
            let key =
                PrivateKeyDer::from_pem_file(key_path).map_err(|err| tls_error(key_path, &err))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| tls_error(cert_path, &err))
        }
    }
}

/// Joins both sides of an upgraded connection until either closes.
async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => debug!(
                    bytes.up = up,
                    bytes.down = down,
                    "upgraded connection closed"
                ),
                Err(err) => debug!(error = %err, "upgraded connection ended with an error"),
            }
        }
        Err(err) => debug!(error = %err, "upgrade did not complete"),
    }
}

/// The upstream URI: the upstream's scheme and authority, its own path
/// prefix (if any) followed by the request path, and the query without
/// credentials.
fn upstream_uri(upstream: &Uri, request: &Uri) -> Result<Uri, GatewayError> {
    let base = upstream.path().trim_end_matches('/');
    let path = request.path();
    let query = request.query().and_then(strip_credential_query);
    let mut path_and_query =
        String::with_capacity(base.len() + path.len() + 1 + query.as_ref().map_or(0, |q| q.len()));
    path_and_query.push_str(base);
    path_and_query.push_str(path);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(&query);
    }
    let path_and_query =
        PathAndQuery::try_from(path_and_query).map_err(|_| GatewayError::InvalidPath)?;
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| GatewayError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uris() {
        let cases = [
            (
                "http://127.0.0.1:9000",
                "/a/b?x=1&token=t&y=2",
                "http://127.0.0.1:9000/a/b?x=1&y=2",
            ),
            (
                "http://127.0.0.1:9000/",
                "/a?token=t",
                "http://127.0.0.1:9000/a",
            ),
            ("http://up:80/base/", "/a/b", "http://up:80/base/a/b"),
            ("http://up/base", "/?q=%20", "http://up/base/?q=%20"),
            ("http://up", "/x?accesskey=k", "http://up/x"),
        ];
        for (upstream, request, expected) in cases {
            let uri = upstream_uri(&upstream.parse().unwrap(), &request.parse().unwrap()).unwrap();
            assert_eq!(uri.to_string(), expected, "{upstream} + {request}");
        }
    }
}
