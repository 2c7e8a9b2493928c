//! `/metrics`: the Prometheus text exposition of the core's metrics.
//!
//! The per-host statistics live in the core's monitor on the poller thread, so the request asks the poller
//! to render them (through [`Published::metrics`]) and waits at most [`METRICS_WAIT`]. The poller renders
//! between two inputs, which takes microseconds; scrapes are rare, so this costs the hot routes nothing.

use std::time::Duration;

use async_io::Timer;
use bytes::Bytes;
use futures_lite::future;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, StatusCode};

use crate::publish::Published;

/// The path of the metrics.
pub(crate) const PATH: &str = "/metrics";

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4";

/// How long a scrape waits for the poller before answering 503.
pub const METRICS_WAIT: Duration = Duration::from_secs(2);

/// Answers a request for [`PATH`] and counts the answer.
pub(crate) async fn answer(published: &Published, method: &Method) -> hyper::Response<Full<Bytes>> {
    let response = if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    } else {
        let rendered = future::or(published.metrics(), async {
            Timer::after(METRICS_WAIT).await;
            None
        })
        .await;
        match rendered {
            Some(text) => {
                let mut response = plain(StatusCode::OK, Bytes::from(text));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_METRICS));
                response
            }
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(br#"{"error_text": "Metrics are not available right now"}"#),
            ),
        }
    };
    published.http_counters().record_metrics(response.status().as_u16());
    response
}

fn plain(status: StatusCode, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = status;
    let content_type =
        if status == StatusCode::SERVICE_UNAVAILABLE { "application/json" } else { "text/plain; charset=utf-8" };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
