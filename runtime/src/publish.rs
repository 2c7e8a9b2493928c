//! Where the poller publishes snapshots and request handlers read them, without either ever blocking the other.
//!
//! The snapshot is an `Arc` swapped atomically: a reader loads it with no lock and keeps a consistent view of
//! every host for as long as it needs. Requests that may wait for fresher data (`wait_ms`) can also be woken
//! at each new snapshot and can ask the poller to poll the replicas at once.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use event_listener::{Event, EventListener};
use pg_status_core::cluster::Snapshot;

/// The latest snapshot, a wake-up for each new one, and a way to ask for one sooner.
pub struct Published {
    snapshot: ArcSwap<Snapshot>,
    changed: Event,
    refresh: async_channel::Sender<()>,
}

/// The poller's end of refresh requests; many requests before the poller looks count as one.
pub struct RefreshRequests(pub(crate) async_channel::Receiver<()>);

impl Published {
    /// Publishes `initial` and returns the shared publication with the receiver of refresh requests.
    pub fn new(initial: Snapshot) -> (Arc<Published>, RefreshRequests) {
        // One slot: a pending request already asks for everything a second one would.
        let (refresh, requests) = async_channel::bounded(1);
        let published = Published { snapshot: ArcSwap::from_pointee(initial), changed: Event::new(), refresh };
        (Arc::new(published), RefreshRequests(requests))
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
