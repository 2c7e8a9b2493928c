//! The one trait between the poll driver and the world: a clock, timers, TCP connections and task spawning.
//!
//! The production implementation, [`SmolRuntime`], runs on a smol `LocalExecutor` and async-io; a simulation
//! implements the same trait on a simulated network and clock and runs the very same driver. The driver never
//! reads a clock or opens a socket except through this trait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Instant;

use smol::LocalExecutor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// A boxed future that runs on a single-threaded executor (no `Send` bound).
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What the poll driver needs from its environment, in the style of quinn's `Runtime`.
///
/// Every method takes `&self` and implementations are cheap to clone, so each poll task carries its own handle.
pub trait Runtime: Clone + 'static {
    /// A connected byte stream to a PostgreSQL server.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;

    /// The current time of this runtime's clock.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline` (at once when it has passed).
    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()>;

    /// Opens a TCP connection to `host` (a DNS name or an IP address without brackets) and `port`.
    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<io::Result<Self::Stream>>;

    /// Runs `future` in the background on the current thread until it completes or the runtime is dropped.
    fn spawn(&self, future: LocalBoxFuture<()>);
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

impl Runtime for SmolRuntime {
    type Stream = Compat<async_net::TcpStream>;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> LocalBoxFuture<()> {
        Box::pin(async move {
            async_io::Timer::at(deadline).await;
        })
    }

    fn connect(&self, host: &str, port: u16) -> LocalBoxFuture<io::Result<Self::Stream>> {
        let host = host.to_owned();
        Box::pin(async move {
            let stream = async_net::TcpStream::connect((host.as_str(), port)).await?;
            // The poll protocol is a few small messages per round trip: never wait to coalesce them.
            stream.set_nodelay(true)?;
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
