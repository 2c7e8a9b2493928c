//! One PostgreSQL server of a [`Cluster`](super::Cluster): its address, files, SQL sessions, and starting,
//! stopping, promoting and pausing it.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{NoTls, SimpleQueryMessage};

use super::binaries::run;
use super::helpers::{format_lsn, log_tail, parse_lsn, session_config};
use super::{PgBinaries, HARNESS_APPLICATION_NAME, SERVER_TIMEOUT, USER};
use crate::error::IoContext;
use crate::net::{free_port, next_loopback};
use crate::wait::{wait_until, wait_until_ok};
use crate::{Error, Result};

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
    pub(super) fn new(bins: &Arc<PgBinaries>, root: &Path, index: usize, password: &str) -> Result<Node> {
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
        log_tail(&self.log, max, "server")
    }

    pub(super) fn initdb(&self) -> Result<()> {
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

    pub(super) fn base_backup_from(&self, primary: &Node) -> Result<()> {
        let mut cmd = self.bins.command("pg_basebackup");
        cmd.args(["-h", &primary.host(), "-p", &primary.port.to_string(), "-U", USER, "-D"]).arg(&self.data);
        cmd.args(["-R", "-X", "stream", "-c", "fast", "-w"]).env("PGPASSWORD", &self.password);
        run(cmd, || primary.log_tail(2000))?;
        Ok(())
    }

    /// Appends the node's settings to `postgresql.conf` (later lines win, so a replica's copy of the primary's
    /// settings is overridden).
    pub(super) fn write_config(&self, extra: &[String]) -> Result<()> {
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

    pub(super) fn stop_mode(&self, mode: &str) -> Result<()> {
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
        let mut config = session_config(&self.host(), self.port, &self.password, "postgres", application_name);
        config.options("-c statement_timeout=30000");
        config.connect(NoTls).map_err(|source| Error::Sql { node: self.name.clone(), sql: "(connect)".into(), source })
    }

    pub(super) fn drop_client(&self) {
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
