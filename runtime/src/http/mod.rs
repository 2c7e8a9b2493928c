//! The HTTP front end: hyper's HTTP/1 server on a smol `LocalExecutor`, answering from the published snapshot.
//!
//! One thread serves every connection. The accept loop survives every accept error (running out of file
//! descriptors included: it backs off and goes on), caps the number of open connections, and on shutdown
//! stops accepting and lets the requests in progress finish within a bounded time.

mod conn;
pub mod metrics;
mod respond;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use event_listener::Event;
use futures_lite::future;
use hyper::server::conn::http1;
use smol::LocalExecutor;

use crate::log::Logger;
use crate::publish::Published;

/// The front end's limits; [`Limits::default`] holds the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections at most; beyond it the server stops accepting until one closes.
    pub max_connections: usize,
    /// A started request must be answered within this time (a client sending half a request is dropped
    /// after between half of it and all of it).
    pub request_timeout: Duration,
    /// A keep-alive connection without any request for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; beyond it the answer is 431. hyper needs
    /// at least 8,192.
    pub max_header_bytes: usize,
    /// How long shutdown waits for requests in progress (held `wait_ms` requests included).
    pub drain_timeout: Duration,
    /// Pause after an accept error such as running out of file descriptors.
    pub accept_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            request_timeout: Duration::from_secs(6),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            drain_timeout: Duration::from_secs(2),
            accept_backoff: Duration::from_millis(50),
        }
    }
}

/// The smallest header limit hyper accepts (it panics below it).
const MIN_HEADER_BYTES: usize = 8192;

/// State shared by the accept loop and every connection of the HTTP thread.
struct Shared {
    published: Arc<Published>,
    /// The round-robin position shared by every route and connection.
    cursor: AtomicUsize,
    http: http1::Builder,
    limits: Limits,
    /// Connections currently open.
    open: Cell<usize>,
    /// Notified whenever a connection closes.
    closed: Event,
    /// Set, and `shutdown` notified, when the server stops.
    closing: Cell<bool>,
    shutdown: Event,
    /// For debug lines about requests.
    logger: Logger,
}

/// Counts one open connection for as long as it lives, however its task ends.
struct OpenGuard(Rc<Shared>);

impl OpenGuard {
    fn new(shared: &Rc<Shared>) -> OpenGuard {
        shared.open.set(shared.open.get() + 1);
        OpenGuard(shared.clone())
    }

    fn shared(&self) -> &Rc<Shared> {
        &self.0
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.closed.notify(usize::MAX);
    }
}

/// The HTTP server of one thread.
pub struct HttpServer {
    listener: Async<TcpListener>,
    shared: Rc<Shared>,
    logger: Logger,
}

impl HttpServer {
    /// A server on a bound, listening socket, answering from the snapshots `published` by the poller.
    pub fn new(
        listener: TcpListener,
        published: Arc<Published>,
        limits: Limits,
        logger: Logger,
    ) -> io::Result<HttpServer> {
        let mut http = http1::Builder::new();
        http.keep_alive(true)
            // Our own per-connection watchdog replaces hyper's per-request timer (which also needs a timer).
            .header_read_timeout(None)
            // Not `pipeline_flush`: it skips flushing while unread input is buffered, which swallows the 431
            // answer to an oversized head (its bytes stay in the buffer).
            .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
        let shared = Rc::new(Shared {
            published,
            cursor: AtomicUsize::new(0),
            http,
            limits,
            open: Cell::new(0),
            closed: Event::new(),
            closing: Cell::new(false),
            shutdown: Event::new(),
            logger,
        });
        Ok(HttpServer { listener: Async::new(listener)?, shared, logger })
    }

    /// The address the server listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits (at most the drain timeout) for open
    /// connections to finish their requests. `executor` runs the connections and must be driven by the caller.
    pub async fn run(self, executor: &LocalExecutor<'static>, shutdown: impl Future<Output = ()>) {
        future::or(shutdown, self.accept_loop(executor)).await;
        let HttpServer { listener, shared, .. } = self;
        // Closing the socket makes new clients fail at once instead of waiting in the backlog.
        drop(listener);
        shared.closing.set(true);
        shared.shutdown.notify(usize::MAX);
        let drained = async {
            loop {
                let closed = shared.closed.listen();
                if shared.open.get() == 0 {
                    break;
                }
                closed.await;
            }
        };
        future::or(drained, async {
            Timer::after(shared.limits.drain_timeout).await;
        })
        .await;
    }

    /// Accepts connections forever.
    async fn accept_loop(&self, executor: &LocalExecutor<'static>) {
        let limits = self.shared.limits;
        let mut last_report: Option<Instant> = None;
        loop {
            loop {
                let closed = self.shared.closed.listen();
                if self.shared.open.get() < limits.max_connections {
                    break;
                }
                closed.await;
            }
            match self.listener.accept().await {
                Ok((socket, _peer)) => {
                    // Answers are small and must go out at once.
                    let _ = socket.get_ref().set_nodelay(true);
                    let guard = OpenGuard::new(&self.shared);
                    executor.spawn(conn::serve(socket, guard)).detach();
                }
                // The client gave up between connecting and being accepted: nothing to do.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors or memory, most likely: wait for connections to close. Report at
                    // most every ten seconds, so a flood does not become a flood of log lines.
                    let now = Instant::now();
                    let due = match last_report {
                        Some(at) => now.duration_since(at) >= Duration::from_secs(10),
                        None => true,
                    };
                    if due {
                        last_report = Some(now);
                        self.logger.error(format_args!("accepting an HTTP connection failed: {e}"));
                    }
                    Timer::after(limits.accept_backoff).await;
                }
            }
        }
    }
}
