//! Real PostgreSQL clusters for tests: a primary and streaming replicas, each on its own loopback address, port
//! and data directory, stopped by [`Cluster`]'s `Drop` even when a test panics.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, every server program runs as the `postgres`
//! OS user through `runuser`, and the cluster's directory belongs to that user.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{NoTls, SimpleQueryMessage};

use crate::error::IoContext;
use crate::net::{free_port, next_loopback};
use crate::wait::{wait_until, wait_until_ok};
use crate::{Error, Result};

/// The `application_name` of the harness's own SQL sessions, so that tests can tell them apart from pg-status's
/// connections in `pg_stat_activity`.
pub const HARNESS_APPLICATION_NAME: &str = "pg-status-tests-harness";

/// The database user of every cluster (pg-status's default user).
pub const USER: &str = "postgres";

/// How long server start, stop, promotion and base backups may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL server programs to use, and the OS user to run them as.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
    run_as: Option<OsUser>,
}

/// An OS user the server programs run as (when the tests run as root).
#[derive(Debug, Clone)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl PgBinaries {
    /// Finds the PostgreSQL binaries: `PG_BINDIR` if set, else `/usr/lib/postgresql/15/bin`, else
    /// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`. When running as root, the `postgres`
    /// OS user must exist.
    pub fn locate() -> Result<PgBinaries> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("PG_BINDIR") {
            candidates.push(dir.into());
        }
        candidates.push("/usr/lib/postgresql/15/bin".into());
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
            }
        }
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|v| (v, e.path().join("bin"))))
                .collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            candidates.extend(versions.into_iter().map(|(_, p)| p));
        }
        let bindir = candidates
            .into_iter()
            .find(|dir| ["initdb", "pg_ctl", "pg_basebackup", "postgres"].iter().all(|b| dir.join(b).is_file()))
            .ok_or_else(|| {
                Error::Environment(
                    "no directory with initdb, pg_ctl, pg_basebackup and postgres (tried PG_BINDIR, \
                     /usr/lib/postgresql/15/bin, pg_config --bindir, /usr/lib/postgresql/*/bin)"
                        .into(),
                )
            })?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(OsUser::lookup("postgres")?) } else { None };
        Ok(PgBinaries { bindir, run_as })
    }

    /// The directory holding the server programs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A command running the server program `program`, as the `postgres` OS user when the tests run as root.
    pub fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // The server user may not be able to enter the test's working directory.
        cmd.current_dir(std::env::temp_dir()).stdin(Stdio::null());
        cmd
    }

    /// Gives `path` to the server user (a no-op when not running as root).
    pub fn give(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .context(|| format!("chown {} to {}", path.display(), user.name))?;
        }
        Ok(())
    }
}

impl OsUser {
    fn lookup(name: &str) -> Result<OsUser> {
        let out = |args: &[&str]| -> Result<u32> {
            let o = Command::new("id").args(args).arg(name).output().context(|| format!("running id for {name}"))?;
            if !o.status.success() {
                return Err(Error::Environment(format!(
                    "running as root, but the OS user {name:?} that PostgreSQL must run as does not exist"
                )));
            }
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .map_err(|_| Error::Environment(format!("id {args:?} {name} printed no number")))
        };
        Ok(OsUser { name: name.to_owned(), uid: out(&["-u"])?, gid: out(&["-g"])? })
    }
}

/// Runs a command to completion and turns a failure into [`Error::Command`] with its output.
fn run(mut cmd: Command, extra: impl FnOnce() -> String) -> Result<Output> {
    let line = format!("{cmd:?}");
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context(|| format!("spawning {line}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            output: format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                extra()
            ),
        })
    }
}

/// How to build a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas besides the primary.
    pub replicas: usize,
    /// The password of the `postgres` database user (TCP connections use SCRAM password authentication).
    pub password: String,
    /// Extra `postgresql.conf` lines for every node.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { replicas: 2, password: "postgres".into(), extra_conf: Vec::new() }
    }
}

impl ClusterOptions {
    /// Options for a primary with `replicas` streaming replicas and the default password `postgres`.
    pub fn with_replicas(replicas: usize) -> ClusterOptions {
        ClusterOptions { replicas, ..ClusterOptions::default() }
    }
}

/// A primary and its streaming replicas, each a separate PostgreSQL server on its own loopback address and
/// port. Dropping the cluster stops every server (`pg_ctl stop -m immediate`) and deletes the data.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Stops the servers and deletes the directory if this process dies without dropping the cluster.
    watcher: Option<std::process::Child>,
    // Dropped after the nodes (fields drop in declaration order), so the servers stop before their files go.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates and starts a cluster: initdb for the primary, `pg_basebackup -R` for each replica, and waits
    /// until every replica streams from the primary.
    pub fn start(bins: &PgBinaries, options: ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("pg-status-tests-")
            .tempdir()
            .context(|| "creating the cluster's temporary directory".into())?;
        bins.give(dir.path())?;
        let bins = Arc::new(bins.clone());
        let root = dir.path().to_owned();
        let watcher = spawn_watcher(&bins, &root)?;
        let mut cluster = Cluster { nodes: Vec::new(), watcher: Some(watcher), _dir: dir };

        let primary = Node::new(&bins, &root, 0, &options.password)?;
        primary.initdb()?;
        primary.write_config(&options.extra_conf)?;
        cluster.nodes.push(primary);
        cluster.nodes[0].start()?;

        for i in 1..=options.replicas {
            let replica = Node::new(&bins, &root, i, &options.password)?;
            replica.base_backup_from(&cluster.nodes[0])?;
            replica.write_config(&options.extra_conf)?;
            cluster.nodes.push(replica);
            cluster.nodes[i].start()?;
        }
        cluster.wait_streaming(SERVER_TIMEOUT)?;
        Ok(cluster)
    }

    /// Every node, the initial primary first, then the replicas in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0 is the initial primary).
    ///
    /// # Panics
    /// When `i` is out of range (a test bug).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The node created as primary. After a promotion it may no longer be the master.
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The nodes created as replicas.
    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// Waits until the initial primary has one streaming WAL sender per replica.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        let want = self.nodes.len() - 1;
        let primary = self.primary();
        wait_until_ok(timeout, "every replica to stream from the primary", || -> Result<()> {
            let n = primary.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")?;
            if n.as_deref() == Some(&want.to_string()) {
                Ok(())
            } else {
                Err(Error::SqlResult { node: primary.name().into(), detail: format!("{n:?} streaming, want {want}") })
            }
        })
    }

    /// Waits until every running replica has replayed the primary's current WAL position.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let target = self.primary().current_wal_lsn()?;
        for replica in self.replicas() {
            replica.wait_replayed(target, timeout)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.drop_client();
            let _ = node.stop_mode("immediate");
        }
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
    }
}

/// Starts a detached shell that waits for this test process to end and then stops every server under `root`
/// and deletes it: a test process killed by a timeout or a signal never runs `Drop`, and its servers must not
/// outlive it. `Drop` kills the watcher after a normal stop.
fn spawn_watcher(bins: &PgBinaries, root: &Path) -> Result<std::process::Child> {
    const SCRIPT: &str = r#"
        while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done
        for d in "$WATCH_ROOT"/node*; do
            if [ -f "$d/postmaster.pid" ]; then
                if [ -n "$WATCH_USER" ]; then
                    runuser -u "$WATCH_USER" -- "$WATCH_PG_CTL" -D "$d" -m immediate -w -t 30 stop
                else
                    "$WATCH_PG_CTL" -D "$d" -m immediate -w -t 30 stop
                fi
            fi
        done
        rm -rf "$WATCH_ROOT"
    "#;
    Command::new("sh")
        .args(["-c", SCRIPT])
        .env("WATCH_PID", std::process::id().to_string())
        .env("WATCH_ROOT", root)
        .env("WATCH_PG_CTL", bins.bindir.join("pg_ctl"))
        .env("WATCH_USER", bins.run_as.as_ref().map(|u| u.name.as_str()).unwrap_or(""))
        .current_dir(std::env::temp_dir())
        // Holding none of the test's pipes, so nothing waits for the watcher to exit.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(|| "starting the cluster watcher".into())
}

/// One PostgreSQL server of a [`Cluster`].
pub struct Node {
    name: String,
    ip: Ipv4Addr,
    port: u16,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    password: String,
    bins: Arc<PgBinaries>,
    client: Mutex<Option<postgres::Client>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} at {}:{})", self.name, self.ip, self.port)
    }
}

impl Node {
    fn new(bins: &Arc<PgBinaries>, root: &Path, index: usize, password: &str) -> Result<Node> {
        let ip = next_loopback();
        let port = free_port(ip)?;
        let name = format!("node{index}");
        Ok(Node {
            data: root.join(&name),
            log: root.join(format!("{name}.log")),
            name,
            ip,
            port,
            root: root.to_owned(),
            password: password.to_owned(),
            bins: Arc::clone(bins),
            client: Mutex::new(None),
        })
    }

    /// The node's name in the harness (`node0` is the initial primary).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback address the server listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address and port together.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// The host name pg-status is given for this node (its address, without port) and names it by in responses.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `max` bytes of the server log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(max);
                format!("\n--- tail of {} ---\n{}", self.log.display(), String::from_utf8_lossy(&bytes[start..]))
            }
            Err(e) => format!("\n(no server log {}: {e})", self.log.display()),
        }
    }

    fn initdb(&self) -> Result<()> {
        let pwfile = self.root.join(format!("{}.pw", self.name));
        std::fs::write(&pwfile, format!("{}\n", self.password)).context(|| "writing the password file".into())?;
        self.bins.give(&pwfile)?;
        let mut cmd = self.bins.command("initdb");
        cmd.arg("-D").arg(&self.data).args(["-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256"]);
        cmd.args(["-E", "UTF8", "--locale=C", "-N"]).arg(format!("--pwfile={}", pwfile.display()));
        run(cmd, String::new)?;
        let _ = std::fs::remove_file(&pwfile);
        let hba = "local all all trust\n\
                   local replication all trust\n\
                   host all all 127.0.0.0/8 scram-sha-256\n\
                   host replication all 127.0.0.0/8 scram-sha-256\n";
        self.write_owned(&self.data.join("pg_hba.conf"), hba, false)
    }

    fn base_backup_from(&self, primary: &Node) -> Result<()> {
        let mut cmd = self.bins.command("pg_basebackup");
        cmd.args(["-h", &primary.host(), "-p", &primary.port.to_string(), "-U", USER, "-D"]).arg(&self.data);
        cmd.args(["-R", "-X", "stream", "-c", "fast", "-w"]).env("PGPASSWORD", &self.password);
        run(cmd, || primary.log_tail(2000))?;
        Ok(())
    }

    /// Appends the node's settings to `postgresql.conf` (later lines win, so a replica's copy of the primary's
    /// settings is overridden).
    fn write_config(&self, extra: &[String]) -> Result<()> {
        let mut conf = String::new();
        let _ = writeln!(conf, "\n# pg-status-tests: {}", self.name);
        let _ = writeln!(conf, "listen_addresses = '{}'", self.ip);
        let _ = writeln!(conf, "port = {}", self.port);
        let _ = writeln!(conf, "unix_socket_directories = '{}'", self.root.display());
        for line in [
            "fsync = off",
            "full_page_writes = off",
            "shared_buffers = 16MB",
            "max_connections = 60",
            "wal_level = replica",
            "max_wal_senders = 10",
            "max_replication_slots = 10",
            "wal_keep_size = 256MB",
            "max_wal_size = 256MB",
            "hot_standby = on",
            "wal_receiver_status_interval = 1s",
            "wal_retrieve_retry_interval = 100ms",
            "autovacuum = off",
            "log_min_messages = warning",
            "log_connections = off",
        ] {
            let _ = writeln!(conf, "{line}");
        }
        for line in extra {
            let _ = writeln!(conf, "{line}");
        }
        self.write_owned(&self.data.join("postgresql.conf"), &conf, true)
    }

    fn write_owned(&self, path: &Path, contents: &str, append: bool) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .context(|| format!("opening {}", path.display()))?;
        file.write_all(contents.as_bytes()).context(|| format!("writing {}", path.display()))?;
        self.bins.give(path)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("-l").arg(&self.log);
        cmd.args(["-w", "-t", &SERVER_TIMEOUT.as_secs().to_string(), "start"]);
        run(cmd, || self.log_tail(3000))?;
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self) -> Result<()> {
        self.drop_client();
        self.stop_mode("fast")
    }

    /// Stops the server abruptly, like a crash (`pg_ctl stop -m immediate`).
    pub fn kill(&self) -> Result<()> {
        self.drop_client();
        self.stop_mode("immediate")
    }

    /// Sends the server the stop signal of `mode` (`fast` or `immediate`) and returns at once
    /// (`pg_ctl stop -W`): a benchmark times what follows from this moment, not from when `pg_ctl` has seen
    /// the server go (it looks every 100 ms). [`Node::wait_stopped`] waits for the rest.
    pub fn signal_stop(&self, mode: &str) -> Result<()> {
        self.drop_client();
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(["-m", mode, "-W", "stop"]);
        run(cmd, || self.log_tail(2000))?;
        Ok(())
    }

    /// Waits until the server process has exited.
    pub fn wait_stopped(&self) -> Result<()> {
        wait_until(SERVER_TIMEOUT, &format!("{} to stop", self.name), || (!self.is_running()).then_some(()))
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(["-m", mode, "-w", "-t", &SERVER_TIMEOUT.as_secs().to_string(), "stop"]);
        run(cmd, || self.log_tail(2000))?;
        Ok(())
    }

    /// Whether the server process runs (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("status").stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Asks a replica to promote itself and returns at once (`pg_ctl promote -W`): a benchmark times what
    /// follows from the promotion, not from when `pg_ctl` has seen it (it looks every 100 ms).
    pub fn signal_promote(&self) -> Result<()> {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(["-W", "promote"]);
        run(cmd, || self.log_tail(2000))?;
        Ok(())
    }

    /// Promotes a replica (`pg_ctl promote -w`) and waits until it accepts writes.
    pub fn promote(&self) -> Result<()> {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).args(["-w", "-t", &SERVER_TIMEOUT.as_secs().to_string(), "promote"]);
        run(cmd, || self.log_tail(2000))?;
        wait_until_ok(SERVER_TIMEOUT, &format!("{} to leave recovery", self.name), || -> Result<()> {
            if self.is_in_recovery()? {
                Err(Error::SqlResult { node: self.name.clone(), detail: "still in recovery".into() })
            } else {
                Ok(())
            }
        })
    }

    /// Opens a new SQL session to the node as `postgres` over TCP with password authentication, tagged with
    /// `application_name`.
    pub fn connect_as(&self, application_name: &str) -> Result<postgres::Client> {
        let mut config = postgres::Config::new();
        config
            .host(&self.host())
            .port(self.port)
            .user(USER)
            .password(&self.password)
            .dbname("postgres")
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5))
            .options("-c statement_timeout=30000");
        config.connect(NoTls).map_err(|source| Error::Sql { node: self.name.clone(), sql: "(connect)".into(), source })
    }

    fn drop_client(&self) {
        if let Ok(mut guard) = self.client.lock() {
            guard.take();
        }
    }

    /// Runs `sql` (one or more statements, simple query protocol) on the harness's cached session and returns
    /// every row as text values (`None` for NULL). The session is reopened if it broke.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut guard = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let usable = matches!(guard.as_ref(), Some(c) if !c.is_closed());
        if !usable {
            *guard = Some(self.connect_as(HARNESS_APPLICATION_NAME)?);
        }
        let Some(client) = guard.as_mut() else {
            // Unreachable: the session was stored just above.
            return Err(Error::SqlResult { node: self.name.clone(), detail: "no session".into() });
        };
        match client.simple_query(sql) {
            Ok(messages) => Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect()),
            Err(source) => {
                guard.take();
                Err(Error::Sql { node: self.name.clone(), sql: sql.to_owned(), source })
            }
        }
    }

    /// Runs `sql` and returns the first column of the first row (`None` for NULL or no row).
    pub fn value(&self, sql: &str) -> Result<Option<String>> {
        Ok(self.query(sql)?.into_iter().next().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Runs statements whose results do not matter.
    pub fn execute(&self, sql: &str) -> Result<()> {
        self.query(sql).map(|_| ())
    }

    /// Whether the node is a replica (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> Result<bool> {
        let v = self.value("SELECT pg_is_in_recovery()")?;
        Ok(v.as_deref() == Some("t"))
    }

    fn lsn_value(&self, sql: &str) -> Result<Option<u64>> {
        match self.value(sql)? {
            None => Ok(None),
            Some(text) => parse_lsn(&text)
                .map(Some)
                .ok_or_else(|| Error::SqlResult { node: self.name.clone(), detail: format!("bad LSN {text:?}") }),
        }
    }

    /// The master's `pg_current_wal_lsn()`.
    pub fn current_wal_lsn(&self) -> Result<u64> {
        self.lsn_value("SELECT pg_current_wal_lsn()")?
            .ok_or_else(|| Error::SqlResult { node: self.name.clone(), detail: "no current WAL LSN".into() })
    }

    /// A replica's `pg_last_wal_replay_lsn()` (`None` on a master).
    pub fn replay_lsn(&self) -> Result<Option<u64>> {
        self.lsn_value("SELECT pg_last_wal_replay_lsn()")
    }

    /// A replica's `pg_last_wal_receive_lsn()` (`None` on a master).
    pub fn receive_lsn(&self) -> Result<Option<u64>> {
        self.lsn_value("SELECT pg_last_wal_receive_lsn()")
    }

    /// Waits until a replica has replayed at least `lsn`.
    pub fn wait_replayed(&self, lsn: u64, timeout: Duration) -> Result<()> {
        wait_until_ok(timeout, &format!("{} to replay {}", self.name, format_lsn(lsn)), || -> Result<()> {
            match self.replay_lsn()? {
                Some(r) if r >= lsn => Ok(()),
                other => Err(Error::SqlResult {
                    node: self.name.clone(),
                    detail: format!("replayed {}", other.map(format_lsn).unwrap_or_else(|| "nothing".into())),
                }),
            }
        })
    }

    /// Waits until a replica has received (not necessarily replayed) at least `lsn`.
    pub fn wait_received(&self, lsn: u64, timeout: Duration) -> Result<()> {
        wait_until_ok(timeout, &format!("{} to receive {}", self.name, format_lsn(lsn)), || -> Result<()> {
            match self.receive_lsn()? {
                Some(r) if r >= lsn => Ok(()),
                other => Err(Error::SqlResult {
                    node: self.name.clone(),
                    detail: format!("received {}", other.map(format_lsn).unwrap_or_else(|| "nothing".into())),
                }),
            }
        })
    }

    /// Pauses WAL replay on a replica (`pg_wal_replay_pause()`); WAL is still received.
    pub fn pause_replay(&self) -> Result<()> {
        self.execute("SELECT pg_wal_replay_pause()")
    }

    /// Resumes WAL replay on a replica (`pg_wal_replay_resume()`).
    pub fn resume_replay(&self) -> Result<()> {
        self.execute("SELECT pg_wal_replay_resume()")
    }

    /// The client sessions on this node that are not the harness's own: every `client backend` in
    /// `pg_stat_activity` except the harness's sessions, ordered by start time.
    pub fn foreign_sessions(&self) -> Result<Vec<Session>> {
        let rows = self.query(&format!(
            "SELECT pid, application_name, coalesce(host(client_addr), ''), backend_start::text, \
             coalesce(usename::text, ''), coalesce(datname::text, '') \
             FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
             AND application_name <> '{HARNESS_APPLICATION_NAME}' ORDER BY backend_start"
        ))?;
        rows.into_iter()
            .map(|row| {
                let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                Ok(Session {
                    pid: text(0).parse().map_err(|_| Error::SqlResult {
                        node: self.name.clone(),
                        detail: format!("bad pid {:?}", text(0)),
                    })?,
                    application_name: text(1),
                    client_addr: text(2),
                    backend_start: text(3),
                    user: text(4),
                    database: text(5),
                })
            })
            .collect()
    }
}

/// One session seen in `pg_stat_activity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The backend's process id.
    pub pid: i32,
    /// The session's `application_name`.
    pub application_name: String,
    /// The client's address (empty for Unix-socket sessions).
    pub client_addr: String,
    /// When the session started, as PostgreSQL prints it.
    pub backend_start: String,
    /// The database user of the session.
    pub user: String,
    /// The database the session is connected to.
    pub database: String,
}

/// Parses a PostgreSQL LSN `HEX/HEX` into a 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

/// Formats a 64-bit WAL position the way PostgreSQL does (`0/3000060`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
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
