//! SIGTERM and SIGINT (stop) and SIGHUP (noted, nothing else) as something an async task can wait for.
//!
//! The handler only writes a byte to a socket pair (signal-hook's self-pipe); the HTTP thread reads it.
//! SIGHUP would otherwise end the process at once, without draining requests or a shutdown line; pg-status
//! reads its configuration only at start-up, so the signal has nothing to reload and is only logged.

use std::io;
use std::os::unix::net::UnixStream;

use async_io::Async;
use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Receives SIGTERM and SIGINT, and separately SIGHUP, once registered.
pub struct Signals {
    read: Async<UnixStream>,
    hangup: Async<UnixStream>,
}

impl Signals {
    /// Installs the handlers. From now on these signals no longer end the process by themselves.
    pub fn register() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGTERM, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGINT, write)?;
        let (hangup, hangup_write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGHUP, hangup_write)?;
        Ok(Signals { read: Async::new(read)?, hangup: Async::new(hangup)? })
    }

    /// Completes at the next signal (or at once for one that arrived since the last call).
    pub async fn recv(&self) {
        let mut byte = [0u8; 1];
        // Errors cannot be told apart from a signal usefully; treating them as one stops cleanly.
        let _ = (&self.read).read(&mut byte).await;
    }

    /// Completes at the next SIGHUP (or at once for one that arrived since the last call).
    pub async fn recv_hangup(&self) {
        let mut byte = [0u8; 1];
        // A read error would make this return at once forever; pending instead keeps the caller quiet.
        if (&self.hangup).read(&mut byte).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
