//! Giving the memory of a burst of connections back to the system.
//!
//! Thousands of connections served at once leave their buffers on the allocator's free lists when they close:
//! glibc's malloc returns memory to the system only from the top of the heap, so a few long-lived
//! allocations above the freed ones keep all of it resident (measured: 5,000 connections with one request
//! each left 60 MB resident after they closed, and repeated bursts ratcheted it to 92 MB). After a burst the
//! HTTP thread asks malloc to release its free pages (`malloc_trim`), which it does from anywhere in the heap.

use std::time::Duration;

use crate::clock::{Clock, TokioClock};

/// How often the HTTP thread looks at the number of open connections.
const EVERY: Duration = Duration::from_secs(1);

/// Connections that must have closed since the last trim (or since the peak) before trimming is worth it.
/// A trim walks the free lists; a handful of closed connections free too little to pay for it.
pub(super) const AFTER_CLOSED: usize = 256;

/// Whether memory should be released now: `open` connections are left after a peak of `peak` since the last
/// release.
pub(super) fn due(peak: usize, open: usize) -> bool {
    peak.saturating_sub(open) >= AFTER_CLOSED
}

/// Runs forever: once a second, releases free memory when at least [`AFTER_CLOSED`] connections closed since
/// the last release. `peak_and_open` returns the most connections open at once since its last call (as the
/// accept loop counts them, so a burst that comes and goes between two looks is seen too) and the number open
/// now, and starts the next peak from now.
pub(super) async fn release_after_bursts(peak_and_open: impl Fn() -> (usize, usize)) {
    let mut peak = 0;
    loop {
        TokioClock.sleep(EVERY).await;
        let (seen, now) = peak_and_open();
        peak = peak.max(seen);
        if due(peak, now) {
            release();
            peak = now;
        }
    }
}

/// Asks the allocator to give free memory back to the system.
fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size and only walks glibc's own heap structures under its own locks; it is
    // safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_burst_is_worth_a_trim() {
        assert!(!due(10, 0));
        assert!(!due(5_000, 5_000 - AFTER_CLOSED + 1));
        assert!(due(5_000, 5_000 - AFTER_CLOSED));
        assert!(due(5_000, 0));
    }
}
