//! One request in, one answer out: the core's pure handler behind hyper's types, and the answer of a
//! `min_lsn` request after its wait (`wait_ms`).

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use pg_status_core::config::LogLevel;
use pg_status_core::http::{self, Body, Prepared, Response, Route, Selection};
use pg_status_core::metrics::HttpCounters;
use pg_status_core::select::Choice;
use pg_status_core::snapshot::Snapshot;

use super::metrics;
use crate::clock::TokioClock;
use crate::process::log::Logger;
use crate::publish::Published;
use crate::server::wait;

/// What to do with a request: answer at once, or wait for fresher data first.
pub(crate) enum Plan {
    /// The answer.
    Now(hyper::Response<Full<Bytes>>),
    /// A `min_lsn` selection with `wait_ms`: no replica satisfies it yet.
    Wait(Selection),
}

/// What every connection of the HTTP thread answers from and shares: the published snapshot, the round-robin
/// position, the answers counted for `/metrics`, and the `/hosts` document of the current snapshot.
pub(crate) struct Answers {
    published: Arc<Published>,
    /// The round-robin position shared by every route and connection.
    cursor: Cell<usize>,
    /// Answers counted by route and status (every connection is served on this thread).
    counters: RefCell<HttpCounters>,
    /// The `/hosts` document and the snapshot it was rendered from, so a stream of `/hosts` requests renders
    /// it once per snapshot. Weak: an old snapshot is not kept alive for it, and while the weak reference
    /// lives its allocation cannot be reused by a newer snapshot, so the address identifies the snapshot.
    hosts: RefCell<Option<(Weak<Snapshot>, Arc<str>)>>,
    /// For debug lines about requests.
    logger: Logger,
}

impl Answers {
    /// Answers from what `published` holds, logging through `logger`; nothing counted yet.
    pub(crate) fn new(published: Arc<Published>, logger: Logger) -> Answers {
        Answers {
            published,
            cursor: Cell::new(0),
            counters: RefCell::new(HttpCounters::default()),
            hosts: RefCell::new(None),
            logger,
        }
    }

    /// Decides how to answer `request` from the current snapshot. Answers given now are counted (a held
    /// request is counted by [`Answers::wait`]).
    pub(crate) fn plan<B>(&self, request: &Request<B>) -> Plan {
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let accept = request.headers().get(ACCEPT).map(HeaderValue::as_bytes);
        let current = self.published.load();
        let snapshot = &**current;
        let response = match http::prepare(snapshot, request.method().as_str(), target, accept) {
            Prepared::Respond(response) => response,
            Prepared::Metrics => metrics::answer(snapshot, &self.published, &self.counters),
            Prepared::Hosts => http::hosts_answer(self.hosts_document(&current)),
            Prepared::Select(selection) if selection.answer_now(snapshot) => {
                let (choice, response) = self.answer(&selection, snapshot);
                log_fallback(&self.logger, snapshot, target, choice);
                response
            }
            Prepared::Select(selection) => return Plan::Wait(selection),
        };
        self.counters.borrow_mut().record(Route::from_path(request.uri().path()), response.status);
        Plan::Now(convert(response))
    }

    /// The answer to a request that RFC 9112 (section 3.2) requires a server to refuse: HTTP/1.1 without
    /// exactly one `Host` header. `None` for every other request. Counted like any other answer.
    pub(crate) fn bad_host<B>(&self, request: &Request<B>) -> Option<hyper::Response<Full<Bytes>>> {
        if request.version() != hyper::Version::HTTP_11 || request.headers().get_all(HOST).iter().count() == 1 {
            return None;
        }
        self.counters.borrow_mut().record(Route::from_path(request.uri().path()), 400);
        let mut out = hyper::Response::new(Full::new(Bytes::from_static(BAD_HOST.as_bytes())));
        *out.status_mut() = StatusCode::BAD_REQUEST;
        out.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Some(out)
    }

    /// Waits until a snapshot satisfies `selection` or its `wait_ms` runs out (see [`wait::for_replica`]),
    /// then answers from the latest one and counts the answer.
    pub(crate) async fn wait(&self, selection: Selection) -> hyper::Response<Full<Bytes>> {
        let snapshot = wait::for_replica(&TokioClock, &self.published, &selection).await;
        let (choice, response) = self.answer(&selection, &snapshot);
        log_fallback(&self.logger, &snapshot, selection.route.path(), choice);
        self.counters.borrow_mut().record(Some(selection.route), response.status);
        convert(response)
    }

    /// Answers `selection` with the round-robin position every connection of this thread shares.
    fn answer(&self, selection: &Selection, snapshot: &Snapshot) -> (Choice, Response) {
        let mut position = self.cursor.get();
        let answered = selection.answer(snapshot, &mut position);
        self.cursor.set(position);
        answered
    }

    /// The `/hosts` document of `snapshot`, rendered at its first `/hosts` request.
    fn hosts_document(&self, snapshot: &Arc<Snapshot>) -> Arc<str> {
        let mut kept = self.hosts.borrow_mut();
        if let Some((from, document)) = &*kept {
            if std::ptr::eq(from.as_ptr(), Arc::as_ptr(snapshot)) {
                return document.clone();
            }
        }
        let document: Arc<str> = snapshot.hosts_json().into();
        *kept = Some((Arc::downgrade(snapshot), document.clone()));
        document
    }
}

const BAD_HOST: &str = r#"{"error_text": "HTTP/1.1 requests need exactly one Host header"}"#;

/// At debug level, says when a replica route found no matching replica and answered the master or nothing.
fn log_fallback(logger: &Logger, snapshot: &Snapshot, target: &str, choice: Choice) {
    if !logger.enabled(LogLevel::Debug) {
        return;
    }
    let name = |i| snapshot.host(i).map_or("?", |h| &*h.id.name);
    match choice {
        Choice::Replica(_) => {}
        Choice::Master(i) => {
            logger.debug(format_args!("{target}: no replica matches; answered the master {}", name(i)))
        }
        Choice::Nothing => {
            logger.debug(format_args!("{target}: no replica matches and there is no master; answered 404"))
        }
    }
}

/// The core's answer as a hyper response.
fn convert(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(body_bytes(response.body)));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(value) = response.content_type.and_then(static_value) {
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
