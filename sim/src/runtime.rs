//! The turmoil implementation of the runtime trait: the production poll driver runs on it unchanged.
//!
//! Time is tokio's simulated clock (each turmoil host runs a paused tokio runtime that turmoil advances),
//! sockets are turmoil's simulated TCP, and tasks are spawned on the host's `LocalSet`, which is where turmoil
//! runs host and client futures.

use std::io;
use std::time::Instant;

use pg_status::clock::{Clock, LocalBoxFuture};
use pg_status::poller::runtime::Runtime;

/// Runs the driver inside a turmoil host or client. Must only be used from within a simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilRuntime;

impl Clock for TurmoilRuntime {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)))
    }
}

impl Runtime for TurmoilRuntime {
    type Stream = turmoil::net::TcpStream;

    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<io::Result<Self::Stream>> {
        let host = host.to_owned();
        Box::pin(async move { turmoil::net::TcpStream::connect((host.as_str(), port)).await })
    }

    fn spawn(&self, future: LocalBoxFuture<()>) {
        // Detached: the driver tracks its tasks through channels, never through join handles.
        drop(tokio::task::spawn_local(future));
    }
}
