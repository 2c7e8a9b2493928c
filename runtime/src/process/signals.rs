//! SIGTERM and SIGINT (stop), and SIGHUP, SIGUSR1 and SIGUSR2 (noted, nothing else), as something an async
//! task can wait for.
//!
//! The handler only writes a byte to a socket pair (signal-hook's self-pipe); the HTTP thread reads it.
//! SIGHUP, SIGUSR1 and SIGUSR2 would otherwise end the process at once, without draining requests or a
//! shutdown line, and they are what tools send to daemons in passing (a terminal closing, a log-rotation
//! script written for another server). pg-status reads its configuration only at start-up and writes its logs
//! to its standard streams, so it has nothing to do for them: they are only logged.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// The signals that are noted and otherwise ignored: number, and the line that says so.
const NOTED: [(i32, &str); 3] = [
    (
        SIGHUP,
        "SIGHUP received and ignored: pg-status reads its configuration only at start-up (restart it to change it)",
    ),
    (SIGUSR1, "SIGUSR1 received and ignored: pg-status has nothing to do on it"),
    (SIGUSR2, "SIGUSR2 received and ignored: pg-status has nothing to do on it"),
];

/// Receives SIGTERM and SIGINT, and separately the noted signals, once registered.
pub struct Signals {
    read: UnixStream,
    noted: UnixStream,
    /// Which noted signal arrived, set by its handler before it wakes `noted`.
    arrived: [Arc<AtomicBool>; NOTED.len()],
}

impl Signals {
    /// Installs the handlers. From now on these signals no longer end the process by themselves.
    pub fn register() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGTERM, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGINT, write)?;
        let (noted, noted_write) = UnixStream::pair()?;
        let arrived: [Arc<AtomicBool>; NOTED.len()] = Default::default();
        for ((signal, _), flag) in NOTED.iter().zip(&arrived) {
            // Registered in this order, the flag is set before the byte that wakes the reader is written.
            signal_hook::flag::register(*signal, flag.clone())?;
            signal_hook::low_level::pipe::register(*signal, noted_write.try_clone()?)?;
        }
        read.set_nonblocking(true)?;
        noted.set_nonblocking(true)?;
        Ok(Signals { read, noted, arrived })
    }

    /// Completes at the next signal (or at once for one that arrived since the last call). Runs on the HTTP
    /// thread's runtime.
    pub async fn recv(&self) {
        // Errors cannot be told apart from a signal usefully; treating them as one stops cleanly.
        let _ = next_byte(&self.read).await;
    }

    /// Completes at the next noted signal (or at once for one that arrived since the last call) with the
    /// lines to log for those that arrived since the last call.
    pub async fn recv_noted(&self) -> Vec<&'static str> {
        // A read error would make this return at once forever; pending instead keeps the caller quiet.
        if next_byte(&self.noted).await.is_err() {
            std::future::pending::<()>().await;
        }
        NOTED
            .iter()
            .zip(&self.arrived)
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|((_, line), _)| *line)
            .collect()
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
