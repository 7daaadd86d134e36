//! The one response body type of the gateway: either a small buffered body of
//! its own, or the upstream's body streamed through untouched.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Body of every response the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A body holding `bytes` in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// An upstream body, streamed frame by frame.
pub fn stream(incoming: hyper::body::Incoming) -> Body {
    incoming.boxed_unsync()
}

/// Any body with the upstream's frame and error types (a wrapped upstream
/// body), boxed.
pub fn boxed<B>(inner: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    inner.boxed_unsync()
}
