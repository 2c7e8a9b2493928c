//! The wait of a `min_lsn` request that asked for one (`wait_ms`): until a published snapshot shows a replica
//! that satisfies it, or until its time is up. It runs on any [`Clock`], so the simulation runs this very code
//! on simulated time.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::Guard;
use futures_lite::future;
use pg_status_core::http::Selection;
use pg_status_core::monitor::REFRESH_SPACING;
use pg_status_core::snapshot::Snapshot;

use crate::clock::Clock;
use crate::publish::Published;

/// Waits until a snapshot in `published` satisfies `selection` or `selection.wait_ms` has passed on `clock`,
/// and returns the snapshot to answer from (the latest one).
///
/// While it waits it keeps asking the poller for fresh replica data; the core grants at most one refresh round
/// every [`REFRESH_SPACING`], however many requests ask. It holds no thread: a waiting request is a future
/// parked on the next snapshot or its next timer.
pub async fn for_replica<C: Clock>(clock: &C, published: &Published, selection: &Selection) -> Arc<Snapshot> {
    // A deadline beyond what the clock can represent cannot be waited for: answer at once.
    let Some(deadline) = clock.now().checked_add(Duration::from_millis(selection.wait_ms)) else {
        return Guard::into_inner(published.load());
    };
    loop {
        // Listen before looking, so a snapshot published in between still wakes us.
        let changed = published.changed();
        let snapshot = Guard::into_inner(published.load());
        let now = clock.now();
        if selection.satisfied(&snapshot) || now >= deadline {
            return snapshot;
        }
        published.request_refresh();
        // Look again at the next snapshot, when the next refresh may be asked for, or at the deadline, whichever
        // comes first: the caller must not wait longer than it asked to.
        let wake = now.checked_add(REFRESH_SPACING).map_or(deadline, |next| next.min(deadline));
        future::or(changed, clock.sleep_until(wake)).await;
    }
}
