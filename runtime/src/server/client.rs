//! A client's socket, TCP or Unix, read and written directly and registered with the HTTP thread's reactor
//! only once it has to wait.
//!
//! Most clients that open a connection per request have sent the request by the time it is accepted: such a
//! connection is read, answered and closed with four system calls (accept, read, write, close) and never
//! enters the reactor. A connection that has to wait for bytes (keep-alive, a slow client, a held `wait_ms`
//! request) is registered edge-triggered once, on its first wait, and stays registered until it closes.

use std::cell::{Cell, OnceCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::task::{ready, Context, Poll};

use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A connected client.
pub(super) struct Client {
    /// Declared before `socket` so that it is dropped first: the registration goes before the socket closes.
    reactor: OnceCell<AsyncFd<Registered>>,
    socket: OwnedFd,
    /// The last read returned less than it asked for, so the receive queue was empty then.
    drained: Cell<bool>,
    /// A wait for input was put off once by yielding instead of registering (see [`Client::poll_new_input`]).
    deferred: Cell<bool>,
}

/// The socket's descriptor as the reactor knows it; the socket itself stays owned by [`Client`].
struct Registered(RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Client {
    /// A client on an accepted, already non-blocking socket.
    pub(super) fn new(socket: OwnedFd) -> Client {
        Client { reactor: OnceCell::new(), socket, drained: Cell::new(false), deferred: Cell::new(false) }
    }

    /// Reads what has arrived, or registers the task for when something does.
    ///
    /// hyper reads again after every answer (a pipelined request? a close?), and on a keep-alive connection the
    /// answer is almost always "not yet". After a short read the socket is not asked again until the reactor
    /// reports new bytes: that saves a `recvfrom` ending in EAGAIN per request.
    pub(super) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.drained.get() {
            ready!(self.poll_new_input(cx))?;
            self.drained.set(false);
        }
        loop {
            match rustix::net::recv(&self.socket, &mut *buf, RecvFlags::empty()) {
                Ok((n, _)) => {
                    if n > 0 && n < buf.len() {
                        self.note_drained(cx);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => ready!(self.poll_ready(cx, Interest::READABLE))?,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Writes what the socket takes now, or registers the task for when it takes more.
    pub(super) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            // No SIGPIPE for a client that went away: the error is enough.
            match rustix::net::send(&self.socket, buf, SendFlags::NOSIGNAL) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => ready!(self.poll_ready(cx, Interest::WRITABLE))?,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Notes a read that emptied the receive queue. Readiness the reactor holds from before it is stale and is
    /// cleared now, in the same turn as the read (the reactor cannot run in between on this thread), so that
    /// only bytes arriving after the read wake the task; cleared any later, it could be the report of those.
    fn note_drained(&self, cx: &mut Context<'_>) {
        self.drained.set(true);
        if let Some(reactor) = self.reactor.get() {
            if let Poll::Ready(Ok(mut stale)) = reactor.poll_read_ready(cx) {
                stale.clear_ready();
            }
        }
    }

    /// Ready when bytes may have arrived since the last (short) read, without asking the socket.
    ///
    /// An unregistered connection yields once instead: hyper looks for a further request right after reading
    /// one, before it writes the answer, and a connection that closes after that answer would otherwise enter
    /// the reactor only to leave it again.
    fn poll_new_input(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.reactor.get() {
            Some(reactor) => reactor.poll_read_ready(cx).map_ok(|_| ()),
            None if !self.deferred.replace(true) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            // Registering reports bytes already queued as well as later ones (edge-triggered registration
            // reports the current state once).
            None => self.registered().map(|reactor| reactor.poll_read_ready(cx).map_ok(|_| ()))?,
        }
    }

    /// Tells the client that no more bytes will come.
    pub(super) fn shutdown_write(&self) {
        let _ = rustix::net::shutdown(&self.socket, Shutdown::Write);
    }

    /// Ready once the socket may be ready for `interest` again after it last said "would block". Registers
    /// the socket on its first wait.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        let reactor = self.registered()?;
        let poll = |cx: &mut Context<'_>| {
            if interest.is_readable() {
                reactor.poll_read_ready(cx)
            } else {
                reactor.poll_write_ready(cx)
            }
        };
        // Readiness the reactor still holds predates the "would block" the caller just saw: clear it, so that
        // only a new edge wakes the task. Nothing runs the reactor in between on this single thread.
        if let Poll::Ready(Ok(mut stale)) = poll(cx) {
            stale.clear_ready();
        }
        poll(cx).map_ok(|_| ())
    }

    /// The socket's registration with the reactor, made on first use.
    fn registered(&self) -> io::Result<&AsyncFd<Registered>> {
        match self.reactor.get() {
            Some(reactor) => Ok(reactor),
            None => {
                let fd = Registered(self.socket.as_fd().as_raw_fd());
                // SAFETY: the descriptor is `socket`'s, which this `Client` owns and closes only after the
                // registration is dropped (`reactor` is declared before `socket`), so it stays open and refers
                // to the same socket for the registration's whole life.
                let registered = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
                Ok(self.reactor.get_or_init(|| registered))
            }
        }
    }
}
