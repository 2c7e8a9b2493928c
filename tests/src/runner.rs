//! Runs the pg-status binary under test: an environment map in, stdout and stderr captured line by line with
//! arrival times, HTTP helpers against its port, SIGTERM and exit status, and a kill on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::http::{self, HttpResponse};
use crate::net::free_port;
use crate::wait::{wait_until, wait_until_ok};
use crate::{Error, Result};

/// Environment variable naming a pg-status binary to test instead of the one cargo built.
pub const BINARY_ENV: &str = "PG_STATUS_BIN";

/// Set to `1` to copy every captured line of pg-status to the test's stderr as it arrives.
pub const ECHO_ENV: &str = "PG_STATUS_TESTS_ECHO";

/// The binary to test: `$PG_STATUS_BIN` if set, else `compiled` (pass
/// `option_env!("CARGO_BIN_EXE_pg-status-under-test")` from an integration test).
pub fn binary(compiled: Option<&str>) -> Result<PathBuf> {
    let path: PathBuf = match std::env::var_os(BINARY_ENV) {
        Some(p) => p.into(),
        None => compiled
            .ok_or_else(|| {
                Error::Environment(format!(
                    "no pg-status binary: set {BINARY_ENV} or build the pg-status-under-test binary of this package"
                ))
            })?
            .into(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Environment(format!("the pg-status binary {} does not exist", path.display())))
    }
}

/// One captured output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When the harness read it.
    pub at: Instant,
    /// The line without its line terminator.
    pub text: String,
}

#[derive(Debug, Default)]
struct LinesInner {
    lines: Vec<Line>,
    closed: bool,
}

/// The captured lines of one output stream, shared with the thread that reads them.
#[derive(Debug, Default)]
pub struct Lines {
    name: String,
    inner: Mutex<LinesInner>,
    cond: Condvar,
}

impl Lines {
    fn new(name: &str) -> Lines {
        Lines { name: name.to_owned(), ..Lines::default() }
    }

    fn lock(&self) -> MutexGuard<'_, LinesInner> {
        // Only this module writes the buffer, one push at a time: a poisoned lock still holds whole lines.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, text: String) {
        if std::env::var(ECHO_ENV).as_deref() == Ok("1") {
            eprintln!("[pg-status {}] {text}", self.name);
        }
        self.lock().lines.push(Line { at: Instant::now(), text });
        self.cond.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Number of lines captured so far (an index to wait for lines after).
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether no line was captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the stream reached end of file (the process closed it or exited).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Every line captured so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lock().lines.clone()
    }

    /// The text of every line captured so far.
    pub fn texts(&self) -> Vec<String> {
        self.lock().lines.iter().map(|l| l.text.clone()).collect()
    }

    /// How many captured lines equal `text` exactly.
    pub fn count(&self, text: &str) -> usize {
        self.lock().lines.iter().filter(|l| l.text == text).count()
    }

    /// How many lines from index `from` on equal `text` exactly.
    pub fn count_since(&self, from: usize, text: &str) -> usize {
        self.lock().lines.iter().skip(from).filter(|l| l.text == text).count()
    }

    /// Waits for a line at index `from` or later that satisfies `pred`; returns its index and the line.
    pub fn wait_for(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, Line)> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if let Some((i, line)) = guard.lines.iter().enumerate().skip(from).find(|(_, l)| pred(&l.text)) {
                return Ok((i, line.clone()));
            }
            let now = Instant::now();
            if now >= deadline || guard.closed {
                let seen: Vec<&str> = guard.lines.iter().skip(from).map(|l| l.text.as_str()).collect();
                return Err(Error::Timeout {
                    what: format!("{what} on {}", self.name),
                    after: timeout,
                    last: Some(format!("{}lines: {seen:?}", if guard.closed { "stream closed; " } else { "" })),
                });
            }
            guard = match self.cond.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits for a line exactly equal to `text`, anywhere in the captured output.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> Result<Line> {
        self.wait_for(0, &format!("the line {text:?}"), timeout, |l| l == text).map(|(_, l)| l)
    }

    /// Waits for a line exactly equal to `text` at index `from` or later; returns its index and the line.
    pub fn wait_for_line_after(&self, from: usize, text: &str, timeout: Duration) -> Result<(usize, Line)> {
        self.wait_for(from, &format!("the line {text:?}"), timeout, |l| l == text)
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_contains(&self, needle: &str, timeout: Duration) -> Result<Line> {
        self.wait_for(0, &format!("a line containing {needle:?}"), timeout, |l| l.contains(needle)).map(|(_, l)| l)
    }

    /// Waits until the stream is closed (the process exited or closed it).
    pub fn wait_closed(&self, timeout: Duration) -> Result<()> {
        wait_until(timeout, &format!("{} to close", self.name), || self.is_closed().then_some(()))
    }
}

fn capture(stream: impl Read + Send + 'static, lines: Arc<Lines>) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("capture-{}", lines.name))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        lines.push(String::from_utf8_lossy(&buf).into_owned());
                    }
                }
            }
            lines.close();
        })
        .context(|| "spawning an output capture thread".into())?;
    Ok(())
}

/// Builds the environment of one pg-status process.
#[derive(Debug, Clone)]
pub struct PgStatusBuilder {
    binary: PathBuf,
    /// `Some(value)` sets a variable, `None` removes it.
    env: BTreeMap<String, Option<String>>,
    http_port: u16,
}

impl PgStatusBuilder {
    /// A builder for `binary`, listening on `127.0.0.1` and a free port. The test's own `pg_status__*` and
    /// libpq `PG*` variables are not passed on, nor `HOME` (libpq's default TLS files live below it, and a
    /// machine's own `~/.postgresql` must not change a test): set it to test those defaults.
    pub fn new(binary: &Path) -> Result<PgStatusBuilder> {
        let http_port = free_port(Ipv4Addr::LOCALHOST)?;
        let mut builder = PgStatusBuilder { binary: binary.to_owned(), env: BTreeMap::new(), http_port };
        builder.env.insert("pg_status__http_host".into(), Some("127.0.0.1".into()));
        builder.env.insert("pg_status__http_port".into(), Some(http_port.to_string()));
        Ok(builder)
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl ToString) -> PgStatusBuilder {
        self.env.insert(name.to_owned(), Some(value.to_string()));
        self
    }

    /// Removes an environment variable (also one the builder set by default).
    pub fn without(mut self, name: &str) -> PgStatusBuilder {
        self.env.insert(name.to_owned(), None);
        self
    }

    /// Sets `pg_status__hosts` to the hosts and `pg_status__pg_port` to their ports, both in the given order.
    pub fn hosts<S: AsRef<str>>(self, hosts: &[(S, u16)]) -> PgStatusBuilder {
        let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_ref()).collect();
        let ports: Vec<String> = hosts.iter().map(|(_, p)| p.to_string()).collect();
        self.env("pg_status__hosts", names.join(",")).env("pg_status__pg_port", ports.join(","))
    }

    /// Fast polling for tests: `sleep_ms`, `query_timeout_ms` and `max_fails` as given, a 1 s connect timeout.
    pub fn timing(self, sleep_ms: u64, query_timeout_ms: u64, max_fails: u32) -> PgStatusBuilder {
        self.env("pg_status__sleep_ms", sleep_ms)
            .env("pg_status__query_timeout_ms", query_timeout_ms)
            .env("pg_status__max_fails", max_fails)
            .env("pg_status__connect_timeout", 1)
    }

    /// The address the process will serve HTTP on (meaningful unless the test overrides the listen settings).
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port))
    }

    /// Starts the process. It is killed when the thread that spawned it exits (Linux `PR_SET_PDEATHSIG`), so
    /// keep a [`PgStatus`] on the thread that started it.
    pub fn spawn(self) -> Result<PgStatus> {
        let mut cmd = Command::new(&self.binary);
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("pg_status__") || (name.starts_with("PG") && name != BINARY_ENV) || name == "HOME" {
                cmd.env_remove(name);
            }
        }
        for (name, value) in &self.env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
        // async-signal-safe. It makes the kernel kill pg-status when the spawning thread dies, so a test process
        // killed without running Drop leaves no pg-status behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context(|| format!("starting {}", self.binary.display()))?;
        let stdout = Arc::new(Lines::new("stdout"));
        let stderr = Arc::new(Lines::new("stderr"));
        let spawned = (|| -> Result<()> {
            let out = child.stdout.take().ok_or_else(|| Error::Environment("no stdout pipe".into()))?;
            let err = child.stderr.take().ok_or_else(|| Error::Environment("no stderr pipe".into()))?;
            capture(out, Arc::clone(&stdout))?;
            capture(err, Arc::clone(&stderr))
        })();
        let process = PgStatus {
            child,
            addr: self.http_addr(),
            stdout,
            stderr,
            started: Instant::now(),
            exit: None,
            env: self.env,
        };
        spawned.map(|()| process)
    }
}

/// A running pg-status process; dropping it kills the process (SIGKILL) if it is still running.
#[derive(Debug)]
pub struct PgStatus {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    started: Instant,
    exit: Option<ExitStatus>,
    env: BTreeMap<String, Option<String>>,
}

impl PgStatus {
    /// The HTTP address the process was told to listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The environment the builder set (`None` = removed), for failure messages.
    pub fn env(&self) -> &BTreeMap<String, Option<String>> {
        &self.env
    }

    /// Captured standard output.
    pub fn stdout(&self) -> &Lines {
        &self.stdout
    }

    /// Captured standard error.
    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// Everything captured so far, for failure messages.
    pub fn output_dump(&self) -> String {
        format!("stdout: {:#?}\nstderr: {:#?}", self.stdout.texts(), self.stderr.texts())
    }

    /// `GET path` in plain-text mode (no `Accept` header).
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        http::get(self.addr, path, None)
    }

    /// `GET path` with `Accept: application/json`.
    pub fn get_json(&self, path: &str) -> Result<HttpResponse> {
        http::get_json(self.addr, path)
    }

    /// `GET path` with the given `Accept` header (or none).
    pub fn get_accept(&self, path: &str, accept: Option<&str>) -> Result<HttpResponse> {
        http::get(self.addr, path, accept)
    }

    /// The `/hosts` array.
    pub fn hosts(&self) -> Result<Vec<serde_json::Value>> {
        let resp = self.get_json("/hosts")?;
        if resp.status != 200 {
            return Err(Error::Http(format!("/hosts answered {resp}")));
        }
        match resp.json()? {
            serde_json::Value::Array(items) => Ok(items),
            other => Err(Error::Http(format!("/hosts is not an array: {other}"))),
        }
    }

    /// The `/hosts` entry of `host`.
    pub fn host_entry(&self, host: &str) -> Result<serde_json::Value> {
        self.hosts()?
            .into_iter()
            .find(|h| h["host"] == host)
            .ok_or_else(|| Error::Http(format!("/hosts has no entry for {host}")))
    }

    /// Polls `GET path` (with `accept`) until `pred` accepts the response; the last response is in the error.
    pub fn wait_for_response(
        &self,
        path: &str,
        accept: Option<&str>,
        timeout: Duration,
        pred: impl Fn(&HttpResponse) -> bool,
    ) -> Result<HttpResponse> {
        wait_until_ok(timeout, &format!("GET {path} to answer as expected"), || -> Result<HttpResponse> {
            let resp = self.get_accept(path, accept)?;
            if pred(&resp) {
                Ok(resp)
            } else {
                Err(Error::Http(format!("got {resp}")))
            }
        })
    }

    /// Polls plain-text `GET path` until it answers 200 with body `body`.
    pub fn wait_for_body(&self, path: &str, body: &str, timeout: Duration) -> Result<HttpResponse> {
        self.wait_for_response(path, None, timeout, |r| r.status == 200 && r.body == body.as_bytes())
    }

    /// Polls `/hosts` until `pred` accepts the entry of `host`; returns that entry.
    pub fn wait_for_host(
        &self,
        host: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        wait_until_ok(timeout, &format!("the /hosts entry of {host} to match"), || -> Result<serde_json::Value> {
            let entry = self.host_entry(host)?;
            if pred(&entry) {
                Ok(entry)
            } else {
                Err(Error::Http(format!("entry {entry}")))
            }
        })
    }

    /// Waits until the HTTP port accepts TCP connections.
    pub fn wait_listening(&self, timeout: Duration) -> Result<()> {
        wait_until_ok(timeout, &format!("pg-status to listen on {}", self.addr), || {
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).map(|_| ())
        })
        .map_err(|e| self.with_output(e))
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_for_response("/ready", None, timeout, |r| r.status == 200)
            .map(|_| ())
            .map_err(|e| self.with_output(e))
    }

    /// Adds the captured output to a timeout error, so start-up failures explain themselves.
    fn with_output(&self, e: Error) -> Error {
        match e {
            Error::Timeout { what, after, last } => Error::Timeout {
                what,
                after,
                last: Some(format!("{}\n{}", last.unwrap_or_default(), self.output_dump())),
            },
            other => other,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| Error::Environment(format!("pid {} does not fit pid_t", self.child.id())))?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, which we have not reaped
        // yet unless `exit` is set (checked by the callers through `terminate`).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(Error::io(format!("kill({pid}, {signal})"), std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context(|| "waiting for pg-status".into())?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                // Let the capture threads drain what the process wrote before exiting.
                let _ = self.stdout.wait_closed(Duration::from_secs(2));
                let _ = self.stderr.wait_closed(Duration::from_secs(2));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "pg-status to exit".into(),
                    after: timeout,
                    last: Some(self.output_dump()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PgStatus {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
