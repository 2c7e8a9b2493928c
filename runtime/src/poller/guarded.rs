//! A database connection's socket with the core's wire checks ([`pg_status_core::wire`]) and a read budget in
//! front of the client library.
//!
//! Without them a server that announces a 2 GiB message, or simply streams bytes, makes the client library
//! buffer all of it, and its connection task, which never yields while bytes keep arriving, holds the one
//! polling thread: every other host's poll misses its deadline. With them such a connection fails after at
//! most [`READ_LIMIT`] bytes, its poll fails with the reason, and the other hosts never notice.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use pg_status_core::wire::{AuthMethods, MessageStream, ServerStream, WireError, READ_LIMIT};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the checks of one connection share with the session that uses it.
#[derive(Debug)]
pub(crate) struct Guard {
    /// Bytes the connection may still read before the next poll query starts.
    budget: Cell<usize>,
    /// Why the server's bytes were refused; kept so the poll's error names the reason rather than "closed".
    refused: RefCell<Option<WireError>>,
    /// The authentication methods allowed (`pg_status__require_auth`).
    allowed: AuthMethods,
}

impl Guard {
    /// The checks of a new connection, with a full budget for its start-up.
    pub(crate) fn new(allowed: AuthMethods) -> Rc<Guard> {
        Rc::new(Guard { budget: Cell::new(READ_LIMIT), refused: RefCell::new(None), allowed })
    }

    /// Gives the connection a full budget again: a new poll query starts.
    pub(crate) fn refill(&self) {
        self.budget.set(READ_LIMIT);
    }

    /// Why the server's bytes were refused, if they were.
    pub(crate) fn refused(&self) -> Option<WireError> {
        self.refused.borrow().clone()
    }

    /// The checks for the messages inside a TLS session on this connection.
    pub(crate) fn messages(&self) -> MessageStream {
        MessageStream::new(self.allowed)
    }

    /// Records why the connection must fail and returns the error to fail it with.
    pub(crate) fn refuse(&self, error: WireError) -> io::Error {
        let returned = io::Error::new(io::ErrorKind::InvalidData, error.clone());
        self.refused.borrow_mut().get_or_insert(error);
        returned
    }

    /// The error of a connection that was refused before, for every later read.
    fn refused_error(&self) -> Option<io::Error> {
        self.refused.borrow().as_ref().map(|e| io::Error::new(io::ErrorKind::InvalidData, e.clone()))
    }
}

/// The socket of one database connection, read within the budget and checked message by message.
pub(crate) struct Guarded<S> {
    inner: S,
    checks: ServerStream,
    guard: Rc<Guard>,
}

impl<S> Guarded<S> {
    /// Wraps a freshly connected socket.
    pub(crate) fn new(inner: S, guard: Rc<Guard>) -> Guarded<S> {
        Guarded { inner, checks: ServerStream::new(guard.allowed), guard }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(error) = this.guard.refused_error() {
            return Poll::Ready(Err(error));
        }
        let budget = this.guard.budget.get();
        if budget == 0 {
            return Poll::Ready(Err(this.guard.refuse(WireError::TooMuchData)));
        }
        let start = buf.filled().len();
        if buf.remaining() <= budget {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            // Near the end of the budget: read no more than it allows (rare, so a small allocation is fine).
            let mut room = vec![0u8; budget];
            let mut limited = ReadBuf::new(&mut room);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            buf.put_slice(limited.filled());
        }
        let read = &buf.filled()[start..];
        this.guard.budget.set(budget - read.len());
        if let Err(error) = this.checks.read(read) {
            // The bytes stay unreported: the client library never sees them.
            buf.set_filled(start);
            return Poll::Ready(Err(this.guard.refuse(error)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.checks.wrote(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Checks the plain messages of a TLS session (decrypted bytes) with `messages`, recording a refusal in
/// `guard`; the bytes the read added to `buf` from `start` on are withdrawn when they are refused.
pub(crate) fn check_decrypted(
    guard: &Guard,
    messages: &mut MessageStream,
    buf: &mut ReadBuf<'_>,
    start: usize,
) -> io::Result<()> {
    if let Err(error) = messages.feed(&buf.filled()[start..]) {
        buf.set_filled(start);
        return Err(guard.refuse(error));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    const STARTUP: [u8; 8] = [0, 0, 0, 8, 0, 3, 0, 0];

    #[test]
    fn a_stream_of_zeros_fails_without_reaching_the_reader() {
        let guard = Guard::new(AuthMethods::ANY);
        let zeros = vec![0u8; 4096];
        let mut stream = Guarded::new(&zeros[..], guard.clone());
        stream.checks.wrote(&STARTUP);
        let mut out = vec![0u8; 100];
        let err = block_on(stream.read(&mut out)).expect_err("zeros refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(guard.refused(), Some(WireError::BadLength { .. })));
    }

    #[test]
    fn the_budget_ends_a_flood_of_small_messages_and_refills_per_query() {
        let guard = Guard::new(AuthMethods::ANY);
        // NoticeResponse-sized messages, twice the budget in all.
        let mut flood = Vec::new();
        while flood.len() < 2 * READ_LIMIT {
            flood.extend_from_slice(&[b'N', 0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8]);
        }
        let mut stream = Guarded::new(&flood[..], guard.clone());
        stream.checks.wrote(&STARTUP);
        let mut sink = Vec::new();
        let err = block_on(stream.read_to_end(&mut sink)).expect_err("budget ends it");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(sink.len(), READ_LIMIT, "exactly the budget is delivered");
        assert_eq!(guard.refused(), Some(WireError::TooMuchData));
    }
}
