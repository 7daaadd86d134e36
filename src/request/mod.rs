//! The request pipeline: what happens to one request, in order.
//!
//! [`service::handle`] gives the request a
//! [`context::RequestContext`] holding its facts (its id, [`id`], and the
//! client's address, [`address`]), answers CORS preflights ([`crate::routes::cors`]), routes
//! it, and asks [`judge`] whether the caller may pass: the credential is
//! verified and the rules (roles, scope, rate limits) applied, yielding a
//! permit that [`crate::proxy`] forwards with. [`verify`] is the same
//! judgement as a forward-authentication decision, with nothing proxied.

pub mod address;
pub mod context;

pub mod id;
pub mod judge;
pub mod service;
pub mod verify;
