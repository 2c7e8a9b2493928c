//! One request in, one answer out: the core's pure handler behind hyper's types.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use pg_status_core::cluster::Snapshot;
use pg_status_core::http::{self, Body};

/// Answers `request` from `snapshot`; `cursor` is the round-robin position shared by all connections.
pub(crate) fn answer<B>(
    snapshot: &Snapshot,
    cursor: &AtomicUsize,
    request: &Request<B>,
) -> hyper::Response<Full<Bytes>> {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let accept = request.headers().get(ACCEPT).map(HeaderValue::as_bytes);
    let response = http::handle(snapshot, cursor, request.method().as_str(), target, accept);

    let mut out = hyper::Response::new(Full::new(body_bytes(response.body)));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(value) = static_value(response.content_type) {
        out.headers_mut().insert(CONTENT_TYPE, value);
    }
    if let Some(value) = response.allow.and_then(static_value) {
        out.headers_mut().insert(ALLOW, value);
    }
    out
}

/// The body as `Bytes` with at most one allocation: static text is borrowed, an owned string is taken over,
/// and shared text keeps its reference count (one small allocation for the owner).
fn body_bytes(body: Body) -> Bytes {
    match body {
        Body::Empty => Bytes::new(),
        Body::Static(text) => Bytes::from_static(text.as_bytes()),
        Body::Shared(text) => Bytes::from_owner(SharedText(text)),
        Body::Owned(text) => Bytes::from(text),
    }
}

/// Shared text as bytes, so `Bytes` can hold the core's `Arc<str>` without copying it.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A header value from static text, without allocating; `None` for text a header cannot carry.
fn static_value(text: &'static str) -> Option<HeaderValue> {
    // These are exactly the bytes `HeaderValue::from_static` accepts, so it cannot panic below.
    let valid = text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f && b < 0x80));
    valid.then(|| HeaderValue::from_static(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert!(static_value("text/plain; charset=utf-8").is_some());
        assert!(static_value("bad\nvalue").is_none());
        assert!(static_value("caf\u{e9}").is_none());
    }

    #[test]
    fn bodies() {
        assert_eq!(body_bytes(Body::Empty), Bytes::new());
        assert_eq!(body_bytes(Body::Static("OK")), Bytes::from_static(b"OK"));
        assert_eq!(body_bytes(Body::Shared(Arc::from("db1"))), Bytes::from_static(b"db1"));
        assert_eq!(body_bytes(Body::Owned("x".to_owned())), Bytes::from_static(b"x"));
    }
}
