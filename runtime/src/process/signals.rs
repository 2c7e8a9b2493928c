//! SIGTERM and SIGINT (stop) and SIGHUP (noted, nothing else) as something an async task can wait for.
//!
//! The handler only writes a byte to a socket pair (signal-hook's self-pipe); the HTTP thread reads it.
//! SIGHUP would otherwise end the process at once, without draining requests or a shutdown line; pg-status
//! reads its configuration only at start-up, so the signal has nothing to reload and is only logged.

use std::io;
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Receives SIGTERM and SIGINT, and separately SIGHUP, once registered.
pub struct Signals {
    read: UnixStream,
    hangup: UnixStream,
}

impl Signals {
    /// Installs the handlers. From now on these signals no longer end the process by themselves.
    pub fn register() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGTERM, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGINT, write)?;
        let (hangup, hangup_write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGHUP, hangup_write)?;
        read.set_nonblocking(true)?;
        hangup.set_nonblocking(true)?;
        Ok(Signals { read, hangup })
    }

    /// Completes at the next signal (or at once for one that arrived since the last call). Runs on the HTTP
    /// thread's runtime.
    pub async fn recv(&self) {
        // Errors cannot be told apart from a signal usefully; treating them as one stops cleanly.
        let _ = next_byte(&self.read).await;
    }

    /// Completes at the next SIGHUP (or at once for one that arrived since the last call).
    pub async fn recv_hangup(&self) {
        // A read error would make this return at once forever; pending instead keeps the caller quiet.
        if next_byte(&self.hangup).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads one byte from `socket`, waiting for the reactor until one is there.
async fn next_byte(socket: &UnixStream) -> io::Result<()> {
    // Registered only while waiting (a copy of the descriptor, so the registration owns what it watches):
    // signals are rare.
    let watched = tokio::net::UnixStream::from_std(socket.try_clone()?)?;
    loop {
        watched.readable().await?;
        match watched.try_read(&mut [0u8; 1]) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}
