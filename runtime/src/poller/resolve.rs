//! Host-name look-ups on a small, fixed pool of threads.
//!
//! The system resolver blocks, so each look-up needs a thread. Handing every look-up a thread of its own
//! (as a general-purpose blocking pool does) lets a long host list of names that do not resolve create
//! hundreds of threads. Here [`THREADS`] threads serve a bounded queue; a look-up whose poll has given up by
//! the time a thread takes it is skipped, and a name that does not resolve fails its poll like a refused
//! connection. IP addresses are never looked up.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use futures_channel::oneshot;

/// Threads that look names up at once; further look-ups wait in the queue.
pub const THREADS: usize = 4;

/// Look-ups that may wait at once; beyond it a poll fails at once rather than queue without bound.
const QUEUE: usize = 4096;

/// One look-up and where its answer goes.
struct Lookup {
    name: String,
    port: u16,
    answer: oneshot::Sender<io::Result<Vec<SocketAddr>>>,
}

/// The queue of the pool, started with the first look-up; `None` when no thread could be started.
fn queue() -> Option<&'static mpsc::SyncSender<Lookup>> {
    static QUEUE_TX: OnceLock<Option<mpsc::SyncSender<Lookup>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Lookup>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..THREADS {
                let rx = rx.clone();
                let thread = std::thread::Builder::new().name(format!("pg-status-dns-{i}")).spawn(move || serve(&rx));
                started += usize::from(thread.is_ok());
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

/// One thread of the pool: takes look-ups until the process ends.
fn serve(queue: &Mutex<mpsc::Receiver<Lookup>>) {
    loop {
        // A poisoned lock means another resolver thread panicked while holding it; the queue is still sound.
        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        let Ok(lookup) = next else { return };
        if lookup.answer.is_canceled() {
            continue;
        }
        let found = (lookup.name.as_str(), lookup.port).to_socket_addrs().map(Iterator::collect);
        let _ = lookup.answer.send(found);
    }
}

/// The addresses of `host` (a DNS name or an IP address without brackets) with `port`.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let Some(queue) = queue() else {
        return Err(io::Error::other("cannot look up host names: no resolver thread could be started"));
    };
    let (answer, answered) = oneshot::channel();
    queue.try_send(Lookup { name: host.to_owned(), port, answer }).map_err(|_| {
        io::Error::other(format!("cannot look up {host}: {QUEUE} host-name look-ups are already waiting"))
    })?;
    let found = answered.await.map_err(|_| io::Error::other(format!("the look-up of {host} was abandoned")))??;
    if found.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")));
    }
    Ok(found)
}
