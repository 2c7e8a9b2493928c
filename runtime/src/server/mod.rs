//! The HTTP thread: hyper's HTTP/1 server on a current-thread tokio runtime, answering from the published
//! snapshot, with its listening sockets ([`listen`]) and the `wait_ms` wait ([`wait`]).
//!
//! One thread serves every connection, over TCP, a Unix socket, or both, under one connection cap. The thread
//! has a reactor of its own ([`block_on`]): sharing the poller's, every wake-up of the HTTP thread was handed
//! over between threads (a futex, an eventfd and a re-armed timerfd each time), which made a request on a new
//! connection cost about 1.5 times what it costs nginx. The accept loop survives every accept error (running
//! out of file descriptors included: it backs off and goes on), caps the number of open connections, and on
//! shutdown stops accepting and lets the requests in progress finish within a bounded time.

mod client;
mod conn;
pub mod listen;
pub mod metrics;
mod respond;
mod trim;
pub mod wait;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::future;
use hyper::server::conn::http1;
use tokio::io::unix::AsyncFd;

use self::client::Client;
use self::listen::{SocketFile, UnixSocket};
use self::respond::Answers;
use crate::clock::{Clock, TokioClock};
use crate::process::log::Logger;
use crate::publish::Published;

/// The front end's limits; [`Limits::default`] holds the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections at most; at the cap a new client makes the connection idle the longest close,
    /// and when none is idle it waits (and the server stops accepting) until one closes.
    pub max_connections: usize,
    /// A started request must be answered within this time (a client sending half a request is dropped
    /// after between half of it and all of it); so must the first request of a connection, and a client whose
    /// answers cannot be written because it does not read them is dropped after as long.
    pub request_timeout: Duration,
    /// A keep-alive connection without any request for this long is closed (a connection that never sent a
    /// request is held to `request_timeout` instead).
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
    /// What requests are answered from, and the state answering them shares.
    answers: Answers,
    http: http1::Builder,
    limits: Limits,
    /// Connections currently open.
    open: Cell<usize>,
    /// The most connections open at once since the memory-release task last looked.
    peak_open: Cell<usize>,
    /// What each open connection is doing, so the accept loop can close the one idle the longest at the cap.
    connections: RefCell<Registry>,
    /// Notified whenever a connection closes.
    closed: Event,
    /// Set, and `shutdown` notified, when the server stops.
    closing: Cell<bool>,
    shutdown: Event,
}

/// The open connections' activity, in slots that closed connections free for new ones.
#[derive(Default)]
struct Registry {
    slots: Vec<Option<Rc<conn::Activity>>>,
    free: Vec<usize>,
}

impl Registry {
    fn insert(&mut self, activity: Rc<conn::Activity>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(activity);
                slot
            }
            None => {
                self.slots.push(Some(activity));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot) {
            if entry.take().is_some() {
                self.free.push(slot);
            }
        }
        // Give the memory of a burst back once every connection is gone (a slot is 8 bytes, so what a few
        // long-lived connections keep of it is small).
        if self.free.len() == self.slots.len() {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    /// Closes the connection idle the longest, if any is idle.
    fn evict_longest_idle(&self) {
        let longest = self
            .slots
            .iter()
            .flatten()
            .filter_map(|a| a.evictable_idle().map(|ticks| (ticks, a)))
            // The first of equals: older connections sit in lower slots more often than not.
            .fold(None::<(u32, &Rc<conn::Activity>)>, |best, (ticks, a)| match best {
                Some((t, _)) if t >= ticks => best,
                _ => Some((ticks, a)),
            });
        if let Some((_, activity)) = longest {
            activity.evict();
        }
    }
}

/// Counts one open connection for as long as it lives, however its task ends.
struct OpenGuard {
    shared: Rc<Shared>,
    activity: Rc<conn::Activity>,
    slot: usize,
}

impl OpenGuard {
    fn new(shared: &Rc<Shared>) -> OpenGuard {
        shared.open.set(shared.open.get() + 1);
        shared.peak_open.set(shared.peak_open.get().max(shared.open.get()));
        let activity = Rc::new(conn::Activity::default());
        let slot = shared.connections.borrow_mut().insert(activity.clone());
        OpenGuard { shared: shared.clone(), activity, slot }
    }

    fn shared(&self) -> &Rc<Shared> {
        &self.shared
    }

    fn activity(&self) -> &Rc<conn::Activity> {
        &self.activity
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.shared.connections.borrow_mut().remove(self.slot);
        self.shared.open.set(self.shared.open.get().saturating_sub(1));
        self.shared.closed.notify(usize::MAX);
    }
}

/// Runs `future` to completion on a new runtime for the HTTP thread: a current-thread tokio runtime with its
/// own reactor and timers, and a `LocalSet` for the connections' tasks. [`HttpServer::run`] must run inside it.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    Ok(tokio::task::LocalSet::new().block_on(&runtime, future))
}

/// The HTTP server of one thread.
pub struct HttpServer {
    tcp: Option<TcpListener>,
    unix: Option<UnixServing>,
    shared: Rc<Shared>,
    logger: Logger,
}

/// The Unix socket being served, and the guard that removes its file when serving ends.
struct UnixServing {
    listener: UnixListener,
    file: SocketFile,
}

impl HttpServer {
    /// A server on a bound, listening TCP socket, answering from the snapshots `published` by the poller.
    pub fn new(
        listener: TcpListener,
        published: Arc<Published>,
        limits: Limits,
        logger: Logger,
    ) -> io::Result<HttpServer> {
        HttpServer::serving(Some(listener), None, published, limits, logger)
    }

    /// A server on a TCP socket, a Unix socket, or both (all connections count against one cap). With
    /// neither it serves nothing until shut down.
    pub fn serving(
        tcp: Option<TcpListener>,
        unix: Option<UnixSocket>,
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
            answers: Answers::new(published, logger),
            http,
            limits,
            open: Cell::new(0),
            peak_open: Cell::new(0),
            connections: RefCell::new(Registry::default()),
            closed: Event::new(),
            closing: Cell::new(false),
            shutdown: Event::new(),
        });
        if let Some(listener) = &tcp {
            // Answers are small and must go out at once. Accepted sockets inherit the option from the
            // listener, which saves a system call on every new connection.
            socket2::SockRef::from(listener).set_tcp_nodelay(true)?;
        }
        let unix = unix.map(|socket| {
            let (listener, file) = socket.into_parts();
            UnixServing { listener, file }
        });
        Ok(HttpServer { tcp, unix, shared, logger })
    }

    /// The TCP address the server listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.tcp {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "the server does not listen on TCP")),
        }
    }

    /// The path of the Unix socket the server listens on, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|u| u.file.path())
    }

    /// Serves until `shutdown` completes, then stops accepting and waits (at most the drain timeout) for open
    /// connections to finish their requests. Runs inside [`block_on`]; fails only when the listening sockets
    /// cannot be registered with the reactor.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let HttpServer { tcp, unix, shared, logger } = self;
        let tcp = tcp.map(register).transpose()?;
        let (unix, file) = match unix {
            Some(UnixServing { listener, file }) => (Some(register(listener)?), Some(file)),
            None => (None, None),
        };
        let accepting = Accepting { shared: &shared, logger: &logger };
        let trim = trim::release_after_bursts(|| {
            let open = shared.open.get();
            (shared.peak_open.replace(open), open)
        });
        let tcp_loop = async {
            match &tcp {
                // Accepted sockets inherit TCP_NODELAY from the listener (set in `serving`).
                Some(listener) => accepting.accept_loop(listener).await,
                None => future::pending().await,
            }
        };
        let unix_loop = async {
            match &unix {
                Some(listener) => accepting.accept_loop(listener).await,
                None => future::pending().await,
            }
        };
        future::or(shutdown, future::or(future::or(tcp_loop, unix_loop), trim)).await;
        // Closing the sockets makes new clients fail at once instead of waiting in the backlog; the Unix
        // socket's file goes with its listener.
        drop(tcp);
        drop(unix);
        drop(file);
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
        future::or(drained, TokioClock.sleep(shared.limits.drain_timeout)).await;
        Ok(())
    }
}

/// The accept loops' view of the server.
struct Accepting<'a> {
    shared: &'a Rc<Shared>,
    logger: &'a Logger,
}

impl Accepting<'_> {
    /// Waits until a new connection fits under the cap. At the cap, the connection idle the longest makes room
    /// for the newcomer (otherwise a flood of connections that never send anything would lock every real client
    /// out); when none is idle, the newcomer waits for one to close.
    async fn make_room(&self) {
        loop {
            let closed = self.shared.closed.listen();
            if self.shared.open.get() < self.shared.limits.max_connections {
                return;
            }
            self.shared.connections.borrow().evict_longest_idle();
            closed.await;
        }
    }

    /// Accepts connections on `listener` forever.
    async fn accept_loop<L: AsFd + AsRawFd>(&self, listener: &AsyncFd<L>) {
        let limits = self.shared.limits;
        let mut last_report: Option<Instant> = None;
        loop {
            match accept(listener).await {
                Ok(socket) => {
                    self.make_room().await;
                    let guard = OpenGuard::new(self.shared);
                    tokio::task::spawn_local(conn::serve(Client::new(socket), guard));
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
                    TokioClock.sleep(limits.accept_backoff).await;
                }
            }
        }
    }
}

/// Registers a listening socket with the HTTP thread's reactor, which then owns it.
fn register<L: AsRawFd>(listener: L) -> io::Result<AsyncFd<L>> {
    // SAFETY: the registration takes ownership of the listener, so its descriptor stays open and refers to
    // the same socket for as long as the registration lives.
    unsafe { AsyncFd::register(listener) }.map_err(io::Error::from)
}

/// The next connection on `listener`, waiting for the reactor when none is queued.
async fn accept<L: AsFd + AsRawFd>(listener: &AsyncFd<L>) -> io::Result<OwnedFd> {
    loop {
        let mut ready = listener.readable().await?;
        // A "would block" clears the readiness, so the next round waits for the reactor.
        if let Ok(accepted) = ready.try_io(|listener| accept_nonblocking(listener.get_ref())) {
            return accepted;
        }
    }
}

/// Accepts a connection already non-blocking (`accept4` with `SOCK_NONBLOCK`): one system call per connection
/// fewer than accepting and then switching the socket to non-blocking mode, on the path of every client that
/// opens a connection per request.
fn accept_nonblocking(listener: &impl AsFd) -> io::Result<OwnedFd> {
    use rustix::net::{accept_with, SocketFlags};
    accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_slots_are_reused_and_freed_in_any_order() {
        let mut registry = Registry::default();
        let mut slots: Vec<usize> = (0..100).map(|_| registry.insert(Rc::new(conn::Activity::default()))).collect();
        // Close from the end, the middle and the start, then open again: no slot is handed out twice.
        for slot in [99, 98, 50, 0, 51, 97] {
            registry.remove(slot);
            slots.retain(|s| *s != slot);
        }
        for _ in 0..10 {
            let slot = registry.insert(Rc::new(conn::Activity::default()));
            assert!(!slots.contains(&slot), "slot {slot} handed out twice");
            slots.push(slot);
        }
        for slot in slots.drain(..) {
            registry.remove(slot);
        }
        assert!(registry.slots.is_empty() && registry.slots.capacity() == 0, "a finished burst leaves nothing");
        assert_eq!(registry.insert(Rc::new(conn::Activity::default())), 0);
    }
}
