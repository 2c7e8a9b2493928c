//! The poll driver's [`Runtime`]: the [`Clock`] plus TCP connections and task spawning, in the style of
//! quinn's `Runtime`. [`SmolRuntime`] is the production one (smol and async-io); the simulation implements
//! the same trait on a simulated network and runs the very same driver.

use std::io;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use smol::LocalExecutor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::clock::{Clock, LocalBoxFuture, SystemClock};

/// What the poll driver needs from its environment, in the style of quinn's `Runtime`: a clock, sockets and
/// tasks.
///
/// Every method takes `&self` and implementations are cheap to clone, so each poll task carries its own handle.
pub trait Runtime: Clock {
    /// A connected byte stream to a PostgreSQL server.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;

    /// Opens a TCP connection to `host` (a DNS name or an IP address without brackets) and `port`.
    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<io::Result<Self::Stream>>;

    /// Runs `future` in the background on the current thread until it completes or the runtime is dropped.
    fn spawn(&self, future: LocalBoxFuture<()>);
}

/// How long a poll connection may be quiet before the kernel probes its peer, then the interval and number
/// of unanswered probes after which the connection fails: a server that vanished without closing its
/// connections (power loss, a partition) is noticed within [`KEEPALIVE_BOUND`] of the connection going idle,
/// and the connection watch tells the core at once.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(2), Duration::from_secs(1), 2);

/// The longest a vanished peer goes unnoticed on an idle poll connection: idle time plus every probe
/// (the README's figure; a test holds it to that).
pub const KEEPALIVE_BOUND: Duration = KEEPALIVE.0.saturating_add(KEEPALIVE.1.saturating_mul(KEEPALIVE.2));

fn keepalive() -> socket2::TcpKeepalive {
    let (idle, interval, probes) = KEEPALIVE;
    socket2::TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(probes)
}

/// The production runtime: async-io timers and sockets, tasks on a smol `LocalExecutor`.
///
/// It holds the executor weakly: tasks hold runtime handles, so a strong reference would keep the executor
/// and its tasks (and their sockets) alive forever.
#[derive(Clone)]
pub struct SmolRuntime {
    executor: Weak<LocalExecutor<'static>>,
}

impl SmolRuntime {
    /// A runtime whose tasks run on `executor`; the caller drives the executor and owns it.
    pub fn new(executor: &Rc<LocalExecutor<'static>>) -> SmolRuntime {
        SmolRuntime { executor: Rc::downgrade(executor) }
    }
}

impl Clock for SmolRuntime {
    fn now(&self) -> Instant {
        SystemClock.now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
        SystemClock.sleep_until(deadline)
    }
}

impl Runtime for SmolRuntime {
    type Stream = Compat<async_net::TcpStream>;

    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<io::Result<Self::Stream>> {
        let host = host.to_owned();
        Box::pin(async move {
            let mut last = None;
            let mut stream = None;
            // Every address in turn, as the standard library does; the first that accepts wins.
            for addr in super::resolve::resolve(&host, port).await? {
                match async_net::TcpStream::connect(addr).await {
                    Ok(connected) => {
                        stream = Some(connected);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let stream = match (stream, last) {
                (Some(stream), _) => stream,
                (None, Some(e)) => return Err(e),
                (None, None) => return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))),
            };
            // The poll protocol is a few small messages per round trip: never wait to coalesce them.
            stream.set_nodelay(true)?;
            socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive())?;
            Ok(stream.compat())
        })
    }

    fn spawn(&self, future: LocalBoxFuture<()>) {
        // Once the executor is gone the runtime is shutting down; the task would never run anyway.
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(future).detach();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_vanished_peer_is_noticed_within_the_four_seconds_the_readme_states() {
        assert_eq!(super::KEEPALIVE_BOUND, std::time::Duration::from_secs(4));
    }
}
