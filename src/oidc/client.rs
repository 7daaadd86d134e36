//! The HTTP client `openidconnect` talks to a provider with: the gateway's
//! pooled hyper client and rustls settings ([`crate::proxy::pooled_client`]),
//! a deadline per request, a cap on response bodies, and no redirects
//! followed (following them would open the gateway to SSRF).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

use crate::config::UpstreamConfig;
use crate::tls::TlsError;

/// Largest provider response read (discovery documents, JWK sets, tokens).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Time allowed for one request to the provider, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the provider failed; the text names the cause, never a
/// secret (request bodies are not part of it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderHttpError(String);

/// The client for one provider.
#[derive(Clone)]
pub struct ProviderHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ProviderHttp {
    /// A client with the upstream settings, trusting `ca_file` in addition
    /// to the system's roots when given.
    pub fn try_new(
        upstream: &UpstreamConfig,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, TlsError> {
        let settings = UpstreamConfig {
            ca_file: ca_file.map(ToOwned::to_owned),
            // The upstreams' client certificate is not the provider's business.
            client_cert: None,
            ..upstream.clone()
        };
        Ok(ProviderHttp {
            client: crate::proxy::pooled_client(&settings)?,
        })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let (parts, body) = request.into_parts();
        let target = format!(
            "{}{}",
            parts.uri.authority().map(|a| a.as_str()).unwrap_or(""),
            parts.uri.path()
        );
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| ProviderHttpError(format!("{target}: {err}")))?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|err| ProviderHttpError(format!("{target}: reading the answer: {err}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ProviderHttpError(format!("{target}: timed out")))?
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
