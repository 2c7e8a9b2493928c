//! PgBouncer (Debian's package) in front of one PostgreSQL server, on its own loopback address and port, in
//! transaction-pooling mode; stopped by [`PgBouncer`]'s `Drop`, and killed with the test process if that dies.
//!
//! PgBouncer refuses to run as root; when the tests run as root it runs as the `postgres` OS user, like the
//! servers.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postgres::{NoTls, SimpleQueryMessage};

use crate::error::IoContext;
use crate::net::{free_port, next_loopback};
use crate::pg::helpers::{log_tail, session_config};
use crate::pg::{Node, USER};
use crate::wait::wait_until_ok;
use crate::{Error, Result};

/// Where Debian's package installs the program.
pub const PROGRAM: &str = "/usr/sbin/pgbouncer";

/// How a [`PgBouncer`] pools.
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// Server connections per database and user (`default_pool_size`).
    pub pool_size: u32,
    /// Client connections PgBouncer accepts (`max_client_conn`).
    pub max_clients: u32,
    /// Extra `[pgbouncer]` settings, `name = value` lines.
    pub extra: Vec<String>,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions { pool_size: 2, max_clients: 200, extra: Vec::new() }
    }
}

/// A running PgBouncer forwarding database `postgres` to one node.
pub struct PgBouncer {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    password: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgBouncer({}:{})", self.ip, self.port)
    }
}

/// The uid and gid to run PgBouncer as: `postgres`'s when the tests run as root, else none (this user).
fn server_user() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().context(|| "running id".into())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::Environment("running as root, but the OS user postgres does not exist".into()))
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

impl PgBouncer {
    /// Starts PgBouncer in front of `node` (user `postgres` with the node's password, SCRAM both ways) and
    /// waits until it answers a query through to the server.
    pub fn start(node: &Node, password: &str, options: &PgBouncerOptions) -> Result<PgBouncer> {
        if !Path::new(PROGRAM).is_file() {
            return Err(Error::Environment(format!("{PROGRAM} is missing: apt-get install pgbouncer")));
        }
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("pg-status-tests-pgbouncer-")
            .tempdir()
            .context(|| "creating PgBouncer's directory".into())?;
        let ip = next_loopback();
        let port = free_port(ip)?;
        let log = dir.path().join("pgbouncer.log");
        let auth = dir.path().join("userlist.txt");
        std::fs::write(&auth, format!("\"{USER}\" \"{password}\"\n")).context(|| "writing userlist.txt".into())?;
        let mut conf = String::new();
        let _ = writeln!(conf, "[databases]\npostgres = host={} port={} dbname=postgres\n", node.ip(), node.port());
        let _ = writeln!(conf, "[pgbouncer]");
        let settings = [
            format!("listen_addr = {ip}"),
            format!("listen_port = {port}"),
            "unix_socket_dir =".to_owned(),
            "auth_type = scram-sha-256".to_owned(),
            format!("auth_file = {}", auth.display()),
            format!("admin_users = {USER}"),
            "pool_mode = transaction".to_owned(),
            format!("default_pool_size = {}", options.pool_size),
            "min_pool_size = 0".to_owned(),
            "reserve_pool_size = 0".to_owned(),
            format!("max_client_conn = {}", options.max_clients),
            format!("logfile = {}", log.display()),
            "log_connections = 0".to_owned(),
            "log_disconnections = 0".to_owned(),
        ];
        for line in settings.iter().chain(&options.extra) {
            let _ = writeln!(conf, "{line}");
        }
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, conf).context(|| "writing pgbouncer.ini".into())?;
        if let Some((uid, gid)) = user {
            for path in [dir.path(), &auth, &ini] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).context(|| format!("chown {}", path.display()))?;
            }
        }
        let mut cmd = Command::new(PROGRAM);
        cmd.arg(&ini).current_dir(dir.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
        // async-signal-safe. It makes the kernel kill PgBouncer when the spawning thread dies, so a test
        // process killed without running Drop leaves no PgBouncer behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context(|| format!("starting {PROGRAM}"))?;
        let bouncer = PgBouncer { child, ip, port, password: password.to_owned(), log, _dir: dir };
        wait_until_ok(Duration::from_secs(30), "PgBouncer to answer a query", || -> Result<()> {
            bouncer
                .connect("pg-status-tests-harness")?
                .simple_query("SELECT 1")
                .map(|_| ())
                .map_err(|source| Error::Sql { node: format!("{bouncer:?}"), sql: "SELECT 1".into(), source })
        })
        .map_err(|e| Error::Environment(format!("{e}{}", bouncer.log_tail(2000))))?;
        Ok(bouncer)
    }

    /// The address PgBouncer listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address and port together.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// The host name pg-status is given for this PgBouncer (its address).
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    /// The last `max` bytes of PgBouncer's log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        log_tail(&self.log, max, "PgBouncer")
    }

    /// A session to database `postgres` through PgBouncer.
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client> {
        self.connect_to("postgres", application_name)
    }

    fn connect_to(&self, database: &str, application_name: &str) -> Result<postgres::Client> {
        let config = session_config(&self.host(), self.port, &self.password, database, application_name);
        config.connect(NoTls).map_err(|source| Error::Sql {
            node: format!("{self:?}"),
            sql: "(connect)".into(),
            source,
        })
    }

    /// Runs a `SHOW` command on PgBouncer's admin console and returns its rows as column-name/value maps.
    pub fn show(&self, what: &str) -> Result<Vec<std::collections::BTreeMap<String, String>>> {
        let mut admin = self.connect_to("pgbouncer", "pg-status-tests-harness")?;
        let sql = format!("SHOW {what}");
        let messages = admin.simple_query(&sql).map_err(|source| Error::Sql {
            node: format!("{self:?}"),
            sql: sql.clone(),
            source,
        })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_owned(), row.get(i).unwrap_or("").to_owned()))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Client connections PgBouncer holds for database `postgres` (the admin console's own excluded).
    pub fn clients(&self) -> Result<usize> {
        Ok(self.show("CLIENTS")?.iter().filter(|c| c.get("database").map(String::as_str) == Some("postgres")).count())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
