//! What tests do with a node: write load, read and print LSN text (the reference model's), wait for it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pg_status_core::lsn::Lsn;
use pg_status_reference::lsn;

use super::{Node, HARNESS_APPLICATION_NAME, USER};
use crate::error::IoContext;
use crate::wait::wait_until;
use crate::Result;

/// Parses a PostgreSQL LSN `HEX/HEX` into a 64-bit position.
/// Surrounding white space is ignored.
pub fn parse_lsn(text: &str) -> Option<u64> {
    lsn::parse(text.trim().as_bytes()).map(|position| position.0)
}

/// Formats a 64-bit WAL position the way PostgreSQL does (`0/3000060`).
pub fn format_lsn(position: u64) -> String {
    lsn::show(Lsn(position))
}

/// The last `max` bytes of the log file `path` of a server (`what` names it when the file cannot be read),
/// for failure messages.
pub fn log_tail(path: &Path, max: usize, what: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            format!("\n--- tail of {} ---\n{}", path.display(), String::from_utf8_lossy(&bytes[start..]))
        }
        Err(e) => format!("\n(no {what} log {}: {e})", path.display()),
    }
}

/// How the harness opens a session as the database user [`USER`] with `password` over TCP: to `database` at
/// `host:port`, tagged with `application_name`, giving up on connecting after 5 s.
pub fn session_config(
    host: &str,
    port: u16,
    password: &str,
    database: &str,
    application_name: &str,
) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(USER)
        .password(password)
        .dbname(database)
        .application_name(application_name)
        .connect_timeout(Duration::from_secs(5));
    config
}

/// Creates the table that [`write_rows`] and [`Writer`] fill.
pub fn create_load_table(node: &Node) -> Result<()> {
    node.execute("CREATE TABLE IF NOT EXISTS harness_load (id bigserial PRIMARY KEY, payload text)")
}

/// Inserts `rows` rows of about 100 bytes each on a master in one statement and returns
/// `pg_current_wal_lsn()` afterwards.
pub fn write_rows(node: &Node, rows: u32) -> Result<u64> {
    create_load_table(node)?;
    node.execute(&format!(
        "INSERT INTO harness_load (payload) SELECT repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g"
    ))?;
    node.current_wal_lsn()
}

/// A background thread that keeps writing to a master: `rows` rows every `interval`, for at most `max_for`
/// or until stopped (also on drop). Errors (a stopped server) are counted, not fatal.
pub struct Writer {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing to `node` (its own session, so it does not contend with the harness's cached one).
    pub fn start(node: &Node, rows: u32, interval: Duration, max_for: Duration) -> Result<Writer> {
        create_load_table(node)?;
        let mut client = node.connect_as(HARNESS_APPLICATION_NAME)?;
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let (s, b, e) = (Arc::clone(&stop), Arc::clone(&batches), Arc::clone(&errors));
        let sql = format!(
            "INSERT INTO harness_load (payload) SELECT repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g"
        );
        let thread = std::thread::Builder::new()
            .name("harness-writer".into())
            .spawn(move || {
                let start = Instant::now();
                while !s.load(Ordering::Relaxed) && start.elapsed() < max_for {
                    match client.batch_execute(&sql) {
                        Ok(()) => b.fetch_add(1, Ordering::Relaxed),
                        Err(_) => e.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(interval);
                }
            })
            .context(|| "spawning the writer thread".into())?;
        Ok(Writer { stop, batches, errors, thread: Some(thread) })
    }

    /// Batches written so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Batches that failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Waits until `node` accepts SQL sessions (after a start or restart).
pub fn wait_accepting(node: &Node, timeout: Duration) -> Result<()> {
    wait_until(timeout, &format!("{} to accept connections", node.name()), || node.value("SELECT 1").ok().map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
        assert_eq!(parse_lsn("0/"), None);
        assert_eq!(parse_lsn("123456789/0"), None);
    }
}
