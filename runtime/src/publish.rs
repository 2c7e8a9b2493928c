//! Where the poller publishes snapshots and request handlers read them, without either ever blocking the other.
//!
//! The snapshot is an `Arc` swapped atomically: a reader loads it with no lock and keeps a consistent view of
//! every host for as long as it needs. Requests that may wait for fresher data (`wait_ms`) can also be woken
//! at each new snapshot and can ask the poller to poll the replicas at once. The HTTP request counters live
//! here too, and `/metrics` asks the poller, which owns the per-host statistics, to render them.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use event_listener::{Event, EventListener};
use pg_status_core::metrics::HttpCounters;
use pg_status_core::snapshot::Snapshot;

/// Where the poller sends the rendered metrics of one `/metrics` request.
pub type MetricsReply = async_channel::Sender<String>;

/// How many `/metrics` requests may wait for the poller at once; more are answered 503 at once.
const METRICS_QUEUE: usize = 8;

/// The latest snapshot, a wake-up for each new one, a way to ask for one sooner, the HTTP request counters,
/// and a way to ask the poller for the metrics.
pub struct Published {
    snapshot: ArcSwap<Snapshot>,
    changed: Event,
    refresh: async_channel::Sender<()>,
    http: HttpCounters,
    metrics: async_channel::Sender<MetricsReply>,
}

/// The poller's end of the requests of the HTTP side: refreshes (many before the poller looks count as
/// one) and `/metrics` renderings.
pub struct RefreshRequests {
    pub(crate) refresh: async_channel::Receiver<()>,
    pub(crate) metrics: async_channel::Receiver<MetricsReply>,
}

impl RefreshRequests {
    /// The next `/metrics` request, for a poller other than the driver (which waits on it by itself);
    /// fails once the publication is gone.
    pub async fn metrics_request(&self) -> Result<MetricsReply, async_channel::RecvError> {
        self.metrics.recv().await
    }
}

impl Published {
    /// Publishes `initial` and returns the shared publication with the poller's end of its requests.
    pub fn new(initial: Snapshot) -> (Arc<Published>, RefreshRequests) {
        // One slot: a pending request already asks for everything a second one would.
        let (refresh, refresh_requests) = async_channel::bounded(1);
        let (metrics, metrics_requests) = async_channel::bounded(METRICS_QUEUE);
        let published = Published {
            snapshot: ArcSwap::from_pointee(initial),
            changed: Event::new(),
            refresh,
            http: HttpCounters::default(),
            metrics,
        };
        (Arc::new(published), RefreshRequests { refresh: refresh_requests, metrics: metrics_requests })
    }

    /// The HTTP answers counted so far, by route and status.
    pub fn http_counters(&self) -> &HttpCounters {
        &self.http
    }

    /// Asks the poller to render the metrics; `None` when no poller answers (none runs, too many requests
    /// are waiting, or it is shutting down). The caller bounds the wait.
    pub async fn metrics(&self) -> Option<String> {
        let (reply, rendered) = async_channel::bounded(1);
        self.metrics.try_send(reply).ok()?;
        rendered.recv().await.ok()
    }

    /// The current snapshot.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Replaces the snapshot and wakes everyone waiting for a change.
    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
        self.changed.notify(usize::MAX);
    }

    /// Completes at the next [`store`](Self::store) after this call. Create it before looking at the
    /// snapshot, so a change in between is not missed.
    pub fn changed(&self) -> EventListener {
        self.changed.listen()
    }

    /// Asks the poller to poll the replicas as soon as it can (no effect when no poller listens).
    pub fn request_refresh(&self) {
        let _ = self.refresh.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use pg_status_core::config::Config;
    use pg_status_core::monitor::Monitor;

    use super::*;

    fn published() -> (Arc<Published>, RefreshRequests) {
        let config = Config::from_vars([("pg_status__hosts", "db1")]).expect("valid configuration");
        Published::new(Monitor::new(&config, Instant::now()).snapshot())
    }

    #[test]
    fn metrics_come_from_whoever_holds_the_requests() {
        let (published, requests) = published();
        let answered = futures_lite::future::block_on(futures_lite::future::zip(published.metrics(), async {
            let reply = requests.metrics.recv().await.expect("a request");
            reply.try_send("rendered".to_owned()).expect("the asker waits");
        }));
        assert_eq!(answered.0.as_deref(), Some("rendered"));
    }

    #[test]
    fn metrics_are_none_without_a_poller() {
        let (published, requests) = published();
        drop(requests);
        assert_eq!(futures_lite::future::block_on(published.metrics()), None);
    }

    #[test]
    fn waiting_scrapes_are_bounded() {
        let (published, _requests) = published();
        // Nobody answers: the queue fills up, and the next request is refused at once.
        let mut waiting: Vec<_> = (0..METRICS_QUEUE).map(|_| Box::pin(published.metrics())).collect();
        for w in &mut waiting {
            assert!(futures_lite::future::block_on(futures_lite::future::poll_once(w)).is_none());
        }
        assert_eq!(futures_lite::future::block_on(published.metrics()), None);
    }
}
