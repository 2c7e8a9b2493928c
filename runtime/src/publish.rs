//! Where the poller publishes snapshots and request handlers read them, without either ever blocking the other.
//!
//! The snapshot is an `Arc` swapped atomically: a reader loads it with no lock and keeps a consistent view of
//! every host for as long as it needs. Requests that may wait for fresher data (`wait_ms`) can also be woken
//! at each new snapshot and can ask the poller to poll the replicas at once. What `/metrics` needs besides
//! the snapshot (per-host counters and poll statistics) is published the same way, so a scrape is a read.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use event_listener::{Event, EventListener};
use pg_status_core::metrics::Telemetry;
use pg_status_core::snapshot::Snapshot;

/// The latest snapshot and telemetry, a wake-up for each new snapshot, and a way to ask for one sooner.
pub struct Published {
    snapshot: ArcSwap<Snapshot>,
    telemetry: ArcSwap<Telemetry>,
    changed: Event,
    refresh: async_channel::Sender<()>,
}

/// The poller's end of the refresh requests of the HTTP side (many before the poller looks count as one).
pub struct RefreshRequests {
    pub(crate) refresh: async_channel::Receiver<()>,
}

impl Published {
    /// Publishes `initial` and returns the shared publication with the poller's end of its requests.
    pub fn new(initial: Snapshot) -> (Arc<Published>, RefreshRequests) {
        // One slot: a pending request already asks for everything a second one would.
        let (refresh, refresh_requests) = async_channel::bounded(1);
        let published = Published {
            snapshot: ArcSwap::from_pointee(initial),
            telemetry: ArcSwap::from_pointee(Telemetry::default()),
            changed: Event::new(),
            refresh,
        };
        (Arc::new(published), RefreshRequests { refresh: refresh_requests })
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

    /// The telemetry published last.
    pub fn telemetry(&self) -> Guard<Arc<Telemetry>> {
        self.telemetry.load()
    }

    /// Replaces the telemetry.
    pub fn store_telemetry(&self, telemetry: Telemetry) {
        self.telemetry.store(Arc::new(telemetry));
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
