//! Lightweight fake PostgreSQL servers on real loopback sockets, for measuring the cost of polling many hosts.
//!
//! Each server is the simulation crate's wire-protocol server ([`pg_status_sim::pgwire::serve`]): a real
//! tokio-postgres client logs in with a cleartext password and runs the poll query, which is answered with
//! one fixed row (the first server is a master, the others caught-up replicas). Every server listens on its
//! own loopback address (`127.88.X.Y`) and a port the kernel picks; all of them run on one tokio thread,
//! pinned to a core of the caller's choice so that they stay off the core of the process being measured.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pg_status_core::observation::POLL_QUERY;
use pg_status_sim::model::POLL_COLUMNS;
use pg_status_sim::pgwire::{self, Database, QueryResult, Reply, SqlError};

use crate::error::{Error, Result};

/// The user and password the fake servers accept (pg-status's defaults).
const USER: &str = "postgres";
const PASSWORD: &str = "postgres";

/// Counts what the servers were asked, across all of them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Poll queries answered.
    pub queries: AtomicU64,
    /// Sessions that logged in.
    pub sessions: AtomicU64,
    /// Queries other than the poll query (answered with an error).
    pub other_queries: AtomicU64,
}

/// One fake server's answers.
struct FakeDb {
    master: bool,
    counters: Arc<Counters>,
}

impl Database for FakeDb {
    fn authenticate(&self, user: &str, _database: &str, password: &str) -> Result<(), SqlError> {
        if user == USER && password == PASSWORD {
            Ok(())
        } else {
            Err(SqlError::wrong_password(user))
        }
    }

    fn query(&self, sql: &str) -> Reply {
        if sql != POLL_QUERY {
            self.counters.other_queries.fetch_add(1, Ordering::Relaxed);
            return Reply {
                delay: Duration::ZERO,
                result: QueryResult::Error(SqlError {
                    code: pgwire::SYNTAX_ERROR,
                    message: "the fake server answers only the poll query".into(),
                }),
            };
        }
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let s = |v: &str| Some(v.to_owned());
        let values = if self.master {
            vec![s("f"), s("0/3000060"), None, None, None, s("000000010000000000000003"), None, None, None]
        } else {
            vec![s("t"), None, s("0/3000060"), s("0/3000060"), s("0"), None, s("4242"), s("1"), s("0/3000060")]
        };
        Reply { delay: Duration::ZERO, result: QueryResult::Row { columns: POLL_COLUMNS, values } }
    }

    fn session_opened(&self) -> u64 {
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        0
    }
}

/// A set of running fake servers; dropping it stops them.
pub struct Fleet {
    addrs: Vec<SocketAddr>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The loopback address of fake server `i`: `127.88.X.Y`, 250 per third octet.
fn address(i: usize) -> Ipv4Addr {
    // i < 250 * 256 is checked by `Fleet::start`, so both octets fit.
    Ipv4Addr::new(127, 88, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data for which all-zero is the empty set; CPU_SET writes within it for any
    // core below CPU_SETSIZE (checked), and sched_setaffinity(0, ...) only reads the set for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= libc::CPU_SETSIZE as usize {
            return Err(Error::Usage(format!("core {core} is out of range")));
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(Error::io(format!("pinning a thread to core {core}"), std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

impl Fleet {
    /// Starts `n` fake servers on one thread pinned to `core`.
    pub fn start(n: usize, core: usize) -> Result<Fleet> {
        if n == 0 || n > 250 * 256 {
            return Err(Error::Usage(format!("{n} fake servers: between 1 and 64,000")));
        }
        let mut listeners = Vec::with_capacity(n);
        for i in 0..n {
            let ip = address(i);
            let listener =
                TcpListener::bind((ip, 0)).map_err(|e| Error::io(format!("binding a fake server on {ip}"), e))?;
            listener.set_nonblocking(true).map_err(|e| Error::io("making a listener non-blocking", e))?;
            listeners.push(listener);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("reading a fake server's address", e))?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the fake servers' runtime", e))?;
        let (c, s) = (Arc::clone(&counters), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("fake-postgres".into())
            .spawn(move || {
                // Unpinned servers still work; they only share the measured core.
                let _ = pin_current_thread(core);
                runtime.block_on(serve_all(listeners, c, s));
            })
            .map_err(|e| Error::io("starting the fake servers' thread", e))?;
        Ok(Fleet { addrs, counters, stop, thread: Some(thread) })
    }

    /// The servers' addresses, in order (the first is the master).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// What the servers were asked so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_all(listeners: Vec<TcpListener>, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let master = Arc::new(FakeDb { master: true, counters: Arc::clone(&counters) });
    let replica = Arc::new(FakeDb { master: false, counters });
    for (i, listener) in listeners.into_iter().enumerate() {
        let db = if i == 0 { Arc::clone(&master) } else { Arc::clone(&replica) };
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { continue };
        tokio::spawn(async move {
            let mut pid: i32 = 1000 + i32::try_from(i).unwrap_or(0) * 1000;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                pid = pid.wrapping_add(1);
                let db = Arc::clone(&db);
                tokio::spawn(async move {
                    // A session that ends with an error (the client hung up mid-message) needs nothing more.
                    let _ = pgwire::serve(stream, &*db, pid).await;
                });
            }
        });
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
