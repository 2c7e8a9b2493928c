//! Time for the waiting code: a [`Clock`] with timers, so that the poll driver and the `wait_ms` wait run on
//! simulated time in the simulation and on the system clock here.
//!
//! [`SystemClock`] uses async-io timers (the poller thread, on smol); [`TokioClock`] uses tokio's timers (the
//! HTTP thread's own runtime). Neither the driver nor the wait ever reads a clock except through this trait.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A boxed future that runs on a single-threaded executor (no `Send` bound).
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A clock and its timers: all that waiting for a deadline needs (the poll driver, and requests that wait
/// for a replica to catch up), so a simulation can run that waiting on simulated time.
pub trait Clock: Clone + 'static {
    /// The current time of this clock.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline` (at once when it has passed).
    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()>;

    /// A future that completes after `wait`; never, when that is beyond what the clock can represent.
    fn sleep(&self, wait: Duration) -> LocalBoxFuture<()> {
        match self.now().checked_add(wait) {
            Some(deadline) => self.sleep_until(deadline),
            None => Box::pin(std::future::pending()),
        }
    }
}

/// The system clock with async-io timers, for code that runs on any smol executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
        Box::pin(async move {
            async_io::Timer::at(deadline).await;
        })
    }
}

/// The system clock with tokio timers, for code on the HTTP thread's runtime ([`crate::server::block_on`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}
