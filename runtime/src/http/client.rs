//! A client's socket: TCP or Unix, behind one type so that one hyper connection type serves both.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use futures_lite::{AsyncRead, AsyncWrite};

/// A connected client.
pub(super) enum Client {
    /// Over TCP.
    Tcp(Async<TcpStream>),
    /// Over the Unix socket.
    Unix(Async<UnixStream>),
}

impl Client {
    /// Reads what has arrived, or registers the task for when something does.
    pub(super) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Client::Tcp(s) => Pin::new(&mut &*s).poll_read(cx, buf),
            Client::Unix(s) => Pin::new(&mut &*s).poll_read(cx, buf),
        }
    }

    /// Writes what the socket takes now, or registers the task for when it takes more.
    pub(super) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Client::Tcp(s) => Pin::new(&mut &*s).poll_write(cx, buf),
            Client::Unix(s) => Pin::new(&mut &*s).poll_write(cx, buf),
        }
    }

    /// Closes the sending side.
    pub(super) fn poll_close(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Client::Tcp(s) => Pin::new(&mut &*s).poll_close(cx),
            Client::Unix(s) => Pin::new(&mut &*s).poll_close(cx),
        }
    }

    /// Ready when the reactor reports the socket readable.
    pub(super) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Client::Tcp(s) => s.poll_readable(cx),
            Client::Unix(s) => s.poll_readable(cx),
        }
    }

    /// Tells the client that no more bytes will come.
    pub(super) fn shutdown_write(&self) {
        let _ = match self {
            Client::Tcp(s) => s.get_ref().shutdown(Shutdown::Write),
            Client::Unix(s) => s.get_ref().shutdown(Shutdown::Write),
        };
    }
}
