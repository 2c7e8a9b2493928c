//! `/metrics`: the Prometheus text exposition of the core's metrics, rendered on the HTTP thread from what
//! the poller published (the snapshot and its telemetry) and the answers this thread counted. A scrape reads;
//! it never waits for the poller.

use std::cell::RefCell;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use pg_status_core::metrics::{self, HttpCounters};

use crate::publish::Published;

/// The path of the metrics.
pub(crate) const PATH: &str = "/metrics";

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4";

/// Answers a request for [`PATH`] and counts the answer.
pub(crate) fn answer(
    published: &Published,
    counters: &RefCell<HttpCounters>,
    method: &Method,
) -> hyper::Response<Full<Bytes>> {
    let response = if method != Method::GET && method != Method::HEAD {
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    } else {
        // Rendered before this answer is counted: a scrape shows the scrapes before it.
        let text = metrics::render(&published.load(), &published.telemetry(), &counters.borrow(), Instant::now());
        let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_METRICS));
        response
    };
    counters.borrow_mut().record_metrics(response.status().as_u16());
    response
}
