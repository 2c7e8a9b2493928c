//! SIGTERM and SIGINT as something an async task can wait for.
//!
//! The handler only writes a byte to a socket pair (signal-hook's self-pipe); the HTTP thread reads it.

use std::io;
use std::os::unix::net::UnixStream;

use async_io::Async;
use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Receives SIGTERM and SIGINT once registered.
pub struct Signals {
    read: Async<UnixStream>,
}

impl Signals {
    /// Installs the handlers. From now on these signals no longer end the process by themselves.
    pub fn register() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGTERM, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGINT, write)?;
        Ok(Signals { read: Async::new(read)? })
    }

    /// Completes at the next signal (or at once for one that arrived since the last call).
    pub async fn recv(&self) {
        let mut byte = [0u8; 1];
        // Errors cannot be told apart from a signal usefully; treating them as one stops cleanly.
        let _ = (&self.read).read(&mut byte).await;
    }
}
