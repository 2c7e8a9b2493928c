//! A small thread-per-connection TCP proxy whose backend can be switched and whose traffic can be frozen or
//! cut, to simulate failovers, hung hosts and network failures without touching PostgreSQL.
//!
//! Modes:
//! - *forward*: new and existing connections are relayed to the backend;
//! - *frozen*: connections are accepted and held, but no byte moves in either direction (a hung host);
//! - *cut*: existing connections are closed and new ones are reset right after being accepted (a dead host).
//!
//! Every thread wakes at least every [`TICK`] to notice mode changes, so a change takes effect within a few
//! tens of milliseconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::IoContext;
use crate::net::next_loopback;
use crate::Result;

/// How often proxy threads re-check the mode.
pub const TICK: Duration = Duration::from_millis(20);

/// How long the proxy waits for its backend to accept a connection.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relay bytes both ways.
    Forward,
    /// Accept and hold connections, relay nothing.
    Frozen,
    /// Close existing connections and reset new ones.
    Cut,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    backend: SocketAddr,
    /// Bumped by a switch or a cut; connections of an older generation close themselves.
    generation: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    accepted: AtomicU64,
    open: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every update is one assignment),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mode, or `None` when the connection of `generation` must close.
    fn mode_for(&self, generation: u64) -> Option<Mode> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let state = self.state();
        if state.generation != generation || state.mode == Mode::Cut {
            None
        } else {
            Some(state.mode)
        }
    }
}

/// A running proxy; dropping it stops accepting and closes every relayed connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `backend`, listening on a fresh loopback address and a free port.
    pub fn start(backend: SocketAddr) -> Result<Proxy> {
        Proxy::start_on(SocketAddr::from((next_loopback(), 0)), backend)
    }

    /// Starts a proxy to `backend` listening on `listen` (port 0 picks a free port).
    pub fn start_on(listen: SocketAddr, backend: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind(listen).context(|| format!("proxy binding {listen}"))?;
        let addr = listener.local_addr().context(|| "proxy reading its address".into())?;
        listener.set_nonblocking(true).context(|| "proxy making its listener non-blocking".into())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { mode: Mode::Forward, backend, generation: 0 }),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(listener, s))
            .context(|| "spawning the proxy's accept thread".into())?;
        Ok(Proxy { addr, shared, accept_thread: Some(accept_thread) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host name to give pg-status for this proxy (its address, without port).
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The current backend.
    pub fn backend(&self) -> SocketAddr {
        self.shared.state().backend
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.state().mode
    }

    /// Sends new connections to `backend` and closes the existing ones (as a moved virtual IP would); the
    /// mode is kept.
    pub fn switch_to(&self, backend: SocketAddr) {
        let mut state = self.shared.state();
        state.backend = backend;
        state.generation += 1;
    }

    /// Holds every connection, new and existing, without relaying a byte, until [`Proxy::restore`].
    pub fn freeze(&self) {
        self.shared.state().mode = Mode::Frozen;
    }

    /// Closes every existing connection and resets new ones, until [`Proxy::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.state();
        state.mode = Mode::Cut;
        state.generation += 1;
    }

    /// Relays traffic again; connections held while frozen continue where they stopped.
    pub fn restore(&self) {
        self.shared.state().mode = Mode::Forward;
    }

    /// How many client connections the proxy has accepted since it started.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// How many client connections are open (relayed or held) right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nonblocking(false);
                let (mode, generation) = {
                    let state = shared.state();
                    (state.mode, state.generation)
                };
                if mode == Mode::Cut {
                    reset(&client);
                    continue;
                }
                let s = Arc::clone(&shared);
                let spawned = std::thread::Builder::new().name("proxy-conn".into()).spawn(move || {
                    s.open.fetch_add(1, Ordering::Relaxed);
                    serve(client, &s, generation);
                    s.open.fetch_sub(1, Ordering::Relaxed);
                });
                // Out of threads: the client was moved into the failed closure and is closed with it.
                drop(spawned);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            // EMFILE and friends: back off and go on.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Closes a socket with a TCP reset instead of an orderly FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve(client: TcpStream, shared: &Arc<Shared>, generation: u64) {
    // Hold the connection while frozen.
    loop {
        match shared.mode_for(generation) {
            None => return reset(&client),
            Some(Mode::Frozen) => std::thread::sleep(TICK),
            Some(_) => break,
        }
    }
    let backend_addr = shared.state().backend;
    let Ok(backend) = TcpStream::connect_timeout(&backend_addr, BACKEND_CONNECT_TIMEOUT) else {
        return reset(&client);
    };
    for s in [&client, &backend] {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(TICK));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    }
    let (Ok(client2), Ok(backend2)) = (client.try_clone(), backend.try_clone()) else {
        reset(&client);
        return reset(&backend);
    };
    let s = Arc::clone(shared);
    let upstream =
        std::thread::Builder::new().name("proxy-pump".into()).spawn(move || pump(backend2, client2, &s, generation));
    match upstream {
        Ok(handle) => {
            pump(client, backend, shared, generation);
            let _ = handle.join();
        }
        Err(_) => {
            reset(&client);
            reset(&backend);
        }
    }
}

/// Copies `from` to `to` until EOF, an error, or a mode change that closes the connection.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, generation: u64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match shared.mode_for(generation) {
            None => {
                reset(&from);
                reset(&to);
                return;
            }
            Some(Mode::Frozen) => {
                std::thread::sleep(TICK);
                continue;
            }
            Some(_) => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    reset(&from);
                    reset(&to);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => {
                reset(&from);
                reset(&to);
                return;
            }
        }
    }
}
