//! `/metrics` on the HTTP thread: the core's answer ([`pg_status_core::metrics::answer`]) from what the poller
//! published (the snapshot and its telemetry), the answers this thread counted and the time of the scrape. A
//! scrape reads; it never waits for the poller.

use std::cell::RefCell;
use std::time::Instant;

use pg_status_core::http::Response;
use pg_status_core::metrics::{self, HttpCounters};
use pg_status_core::snapshot::Snapshot;

use crate::publish::Published;

/// The answer to `GET` or `HEAD /metrics`, rendered from `snapshot` and the telemetry published with it.
pub(crate) fn answer(snapshot: &Snapshot, published: &Published, counters: &RefCell<HttpCounters>) -> Response {
    // Rendered before this answer is counted: a scrape shows the scrapes before it.
    metrics::answer(snapshot, &published.telemetry(), &counters.borrow(), Instant::now())
}
