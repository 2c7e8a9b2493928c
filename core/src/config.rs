//! The typed configuration, read from `pg_status__*` environment variables (and libpq's `PGSSL*`).
//!
//! Every invalid value is an error naming the variable and the value, so the program can refuse to start
//! with one readable line instead of running on a guess.

use std::collections::BTreeMap;
// The address type only (core::net is data, no sockets).
use core::net::IpAddr;
use std::time::Duration;

use crate::wire::{AuthMethod, AuthMethods};

/// Why the environment does not describe a usable configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `pg_status__hosts` is absent.
    #[error("pg_status__hosts is not set: give the PostgreSQL hosts to monitor, separated by ','")]
    MissingHosts,
    /// A variable holds a value that cannot be used.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The environment variable.
        var: String,
        /// The value it holds (never a password: passwords are not validated).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A variable's value is not valid UTF-8.
    #[error("{var}: the value is not valid UTF-8")]
    NotUnicode {
        /// The environment variable.
        var: String,
    },
}

fn invalid(var: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var: var.to_owned(), value: value.to_owned(), reason: reason.into() }
}

/// One monitored PostgreSQL host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The entry exactly as written in `pg_status__hosts`; responses name the host by it.
    pub name: String,
    /// The address to connect to: a DNS name or an IP address, without brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// Data centre from `pg_status__hosts_dc`, when that dimension is in use.
    pub dc: Option<String>,
    /// Region from `pg_status__hosts_geo`, when that dimension is in use.
    pub geo: Option<String>,
}

/// Where the HTTP server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// One address, IPv4 or IPv6.
    Ip(IpAddr),
    /// Every interface on both IPv4 and IPv6 (`*`).
    Any,
}

/// A Unix socket the HTTP server listens on, besides TCP or instead of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketConfig {
    /// `pg_status__http_unix_socket`: where the socket file is made.
    pub path: String,
    /// `pg_status__http_unix_socket_mode`: the socket file's permission bits (who may connect).
    pub mode: u32,
}

/// The default permission bits of the Unix socket: its owner and group may connect.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;

/// The longest Unix socket path Linux accepts (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

/// How much the program logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Per-poll detail and selection fallbacks.
    Debug,
    /// Start-up, shutdown and host transitions (the default).
    Info,
    /// Warnings and errors only.
    Warning,
    /// Errors only.
    Error,
    /// Only what stops the program.
    Fatal,
}

impl LogLevel {
    /// The severity as JSON log lines name it (`levelStr`); fatal lines are `ERROR`, as the newest upstream has it.
    pub fn as_upper(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error | LogLevel::Fatal => "ERROR",
        }
    }
}

/// How log lines are written (`pg_status__log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The spec's plain lines (the default).
    #[default]
    Text,
    /// One JSON object per line, with the newest upstream's keys.
    Json,
}

impl LogFormat {
    /// The value of `pg_status__log_format` that selects it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// The format `value` names; `None` for anything else.
    pub fn from_name(value: &str) -> Option<LogFormat> {
        [LogFormat::Text, LogFormat::Json].into_iter().find(|f| f.as_str() == value)
    }
}

/// Who is master when several hosts claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBrainPolicy {
    /// The first master in `pg_status__hosts` order (the upstream behaviour).
    HostOrder,
    /// The master on the highest timeline; host order breaks ties.
    Timeline,
    /// No master while more than one healthy host claims it: writes fail closed instead of going to either.
    Refuse,
}

impl SplitBrainPolicy {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [SplitBrainPolicy; 3] =
        [SplitBrainPolicy::HostOrder, SplitBrainPolicy::Timeline, SplitBrainPolicy::Refuse];

    /// The policy's value in `pg_status__split_brain`.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitBrainPolicy::HostOrder => "host_order",
            SplitBrainPolicy::Timeline => "timeline",
            SplitBrainPolicy::Refuse => "refuse",
        }
    }
}

/// What a replica route answers when no replica qualifies (`pg_status__replica_fallback`, `fallback=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFallback {
    /// The master (the upstream behaviour).
    Master,
    /// Nothing: 404, for reads that must never land on the master.
    None,
}

impl ReplicaFallback {
    /// The value that selects it, in `pg_status__replica_fallback` and the `fallback` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaFallback::Master => "master",
            ReplicaFallback::None => "none",
        }
    }

    /// The fallback `value` names; `None` for anything else.
    pub fn from_name(value: &[u8]) -> Option<ReplicaFallback> {
        [ReplicaFallback::Master, ReplicaFallback::None].into_iter().find(|f| f.as_str().as_bytes() == value)
    }
}

/// libpq's `sslmode` values, read from `PGSSLMODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plain first, TLS if the server insists.
    Allow,
    /// TLS when the server offers it, without certificate checks (libpq's default).
    Prefer,
    /// TLS always, without certificate checks.
    Require,
    /// TLS with the server certificate checked against the root certificates.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in libpq's order.
    pub const ALL: [SslMode; 6] =
        [SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];

    /// libpq's name of the mode, as `PGSSLMODE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// TLS settings for the connections to PostgreSQL, named as libpq names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `PGSSLMODE`.
    pub mode: SslMode,
    /// `PGSSLROOTCERT`: PEM file of trusted roots.
    pub root_cert: Option<String>,
    /// `PGSSLCERT`: PEM client certificate for mutual TLS.
    pub cert: Option<String>,
    /// `PGSSLKEY`: PEM private key of the client certificate.
    pub key: Option<String>,
    /// `PGSSLCRL`: PEM certificate revocation list.
    pub crl: Option<String>,
    /// Where libpq looks for the files no variable names: `$HOME/.postgresql`, when `HOME` is set.
    pub default_dir: Option<String>,
}

impl TlsConfig {
    /// The settings with libpq's default files filled in where no variable names a file and the default
    /// exists (`exists` says which do): `root.crt` for `PGSSLROOTCERT`, `root.crl` for `PGSSLCRL` (only with
    /// root certificates, which are what it revokes from, as in libpq), and
    /// `postgresql.crt` with `postgresql.key` when neither `PGSSLCERT` nor `PGSSLKEY` is given (the key
    /// whether or not it exists, so a certificate without its key is an error naming the key).
    pub fn with_default_files(&self, exists: impl Fn(&str) -> bool) -> TlsConfig {
        let mut out = self.clone();
        let Some(dir) = self.default_dir.as_deref() else { return out };
        let path = |name: &str| format!("{}/{name}", dir.trim_end_matches('/'));
        let existing = |name: &str| Some(path(name)).filter(|p| exists(p));
        out.root_cert = out.root_cert.or_else(|| existing("root.crt"));
        if out.root_cert.is_some() {
            out.crl = out.crl.or_else(|| existing("root.crl"));
        }
        if out.cert.is_none() && out.key.is_none() {
            if let Some(cert) = existing("postgresql.crt") {
                out.cert = Some(cert);
                out.key = Some(path("postgresql.key"));
            }
        }
        out
    }
}

/// Everything pg-status is told by its environment. `Debug` shows the password as `<hidden>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The monitored hosts, in `pg_status__hosts` order (which is also the split-brain order).
    pub hosts: Vec<HostConfig>,
    /// `pg_status__pg_user`.
    pub user: String,
    /// `pg_status__pg_password`. Never print it.
    pub password: String,
    /// `pg_status__pg_database`.
    pub database: String,
    /// `pg_status__connect_timeout` (seconds); zero means only the iteration deadline limits a connect.
    pub connect_timeout: Duration,
    /// `pg_status__max_fails`: consecutive failures after which a host is dead.
    pub max_fails: u32,
    /// `pg_status__sleep_ms`: pause between the end of one iteration of a host and the start of the next.
    pub sleep: Duration,
    /// `pg_status__query_timeout_ms`: hard deadline of one iteration (connect + query + read).
    pub query_timeout: Duration,
    /// `pg_status__conn_max_age_ms`: a connection older than this is reopened at the next iteration.
    pub conn_max_age: Duration,
    /// `pg_status__fast_sleep_ms`: the pause between polls during a failover episode; zero turns episodes,
    /// fast retries and the connection watch off.
    pub fast_sleep: Duration,
    /// `pg_status__fast_window_ms`: the longest a failover episode polls at the fast interval.
    pub fast_window: Duration,
    /// `pg_status__sync_max_lag_ms`: the global time threshold of "synchronous".
    pub sync_max_lag_ms: u64,
    /// `pg_status__sync_max_lag_bytes`: the global byte threshold of "synchronous".
    pub sync_max_lag_bytes: u64,
    /// `pg_status__http_port`; 0 turns TCP off (allowed only with a Unix socket).
    pub http_port: u16,
    /// `pg_status__http_unix_socket` and its mode, when the API is served on a Unix socket too.
    pub http_unix_socket: Option<UnixSocketConfig>,
    /// `pg_status__http_listen_address` or `pg_status__http_host`.
    pub listen: ListenAddress,
    /// `pg_status__log_level`.
    pub log_level: LogLevel,
    /// `pg_status__log_format`.
    pub log_format: LogFormat,
    /// `pg_status__split_brain`.
    pub split_brain: SplitBrainPolicy,
    /// `pg_status__max_wait_ms`: the largest `wait_ms` a request may ask for.
    pub max_wait: Duration,
    /// `pg_status__replica_fallback`: what replica routes answer when no replica qualifies.
    pub replica_fallback: ReplicaFallback,
    /// This instance's data centre, when locality by DC is in use.
    pub current_dc: Option<String>,
    /// This instance's region, when locality by geo is in use.
    pub current_geo: Option<String>,
    /// TLS to PostgreSQL.
    pub tls: TlsConfig,
    /// `pg_status__require_auth` (or libpq's `PGREQUIREAUTH`): the authentication methods a server may ask for.
    pub require_auth: AuthMethods,
    /// Things worth telling the operator at start-up that do not stop the program.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_fails", &self.max_fails)
            .field("sleep", &self.sleep)
            .field("query_timeout", &self.query_timeout)
            .field("conn_max_age", &self.conn_max_age)
            .field("fast_sleep", &self.fast_sleep)
            .field("fast_window", &self.fast_window)
            .field("sync_max_lag_ms", &self.sync_max_lag_ms)
            .field("sync_max_lag_bytes", &self.sync_max_lag_bytes)
            .field("http_port", &self.http_port)
            .field("listen", &self.listen)
            .field("http_unix_socket", &self.http_unix_socket)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("split_brain", &self.split_brain)
            .field("max_wait", &self.max_wait)
            .field("replica_fallback", &self.replica_fallback)
            .field("current_dc", &self.current_dc)
            .field("current_geo", &self.current_geo)
            .field("tls", &self.tls)
            .field("require_auth", &self.require_auth)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// The variables this version understands; others with the `pg_status__` prefix earn a start-up warning.
pub const KNOWN_VARIABLES: &[&str] = &[
    "pg_status__hosts",
    "pg_status__pg_user",
    "pg_status__pg_password",
    "pg_status__pg_database",
    "pg_status__pg_port",
    "pg_status__connect_timeout",
    "pg_status__max_fails",
    "pg_status__sleep_ms",
    "pg_status__query_timeout_ms",
    "pg_status__conn_max_age_ms",
    "pg_status__fast_sleep_ms",
    "pg_status__fast_window_ms",
    "pg_status__sync_max_lag_ms",
    "pg_status__sync_max_lag_bytes",
    "pg_status__http_port",
    "pg_status__http_host",
    "pg_status__http_listen_address",
    "pg_status__http_unix_socket",
    "pg_status__http_unix_socket_mode",
    "pg_status__log_level",
    "pg_status__log_format",
    "pg_status__split_brain",
    "pg_status__max_wait_ms",
    "pg_status__replica_fallback",
    "pg_status__hosts_dc",
    "pg_status__hosts_geo",
    "pg_status__current_dc",
    "pg_status__current_geo",
    "pg_status__current_dc_env",
    "pg_status__current_geo_env",
    "pg_status__require_auth",
];

/// The largest `pg_status__max_wait_ms`: a request held longer belongs in the client's own retry loop, and
/// shutdown waits for held requests this long at most.
pub const MAX_WAIT_LIMIT_MS: u64 = 60_000;

/// Variables whose values may hold any character: the password is never printed, and other programs' variables
/// are not ours to judge.
fn may_hold_control_characters(name: &str) -> bool {
    name == "pg_status__pg_password"
        || !(name.starts_with("pg_status__") || name.starts_with("PGSSL") || name == "PGREQUIREAUTH")
}

/// A character that would let a value forge or split a log line: ASCII and C1 controls, and Unicode's line and
/// paragraph separators.
pub fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

impl Config {
    /// Reads the configuration from `(name, value)` pairs such as `std::env::vars()`.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: BTreeMap<String, String> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Config::from_map(&map)
    }

    /// Reads the configuration from a map of environment variables.
    pub fn from_map(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let get = |name: &str| env.get(name).map(String::as_str);
        let mut warnings = Vec::new();
        for (name, value) in env {
            if !may_hold_control_characters(name) {
                if let Some(c) = value.chars().find(|c| breaks_lines(*c)) {
                    return Err(invalid(
                        name,
                        value,
                        format!("contains the control character U+{:04X}; values must be printable text", c as u32),
                    ));
                }
            }
        }

        let hosts_raw = get("pg_status__hosts").ok_or(ConfigError::MissingHosts)?;
        let ports = parse_ports(get("pg_status__pg_port"))?;
        let mut hosts = parse_hosts(hosts_raw, &ports)?;

        let max_fails = parse_u64("pg_status__max_fails", get("pg_status__max_fails"), 3, 1)?;
        let max_fails = u32::try_from(max_fails)
            .map_err(|_| invalid("pg_status__max_fails", &max_fails.to_string(), "must be at most 4294967295"))?;

        let listen = parse_listen(get("pg_status__http_host"), get("pg_status__http_listen_address"))?;
        let http_unix_socket = parse_unix_socket(
            get("pg_status__http_unix_socket"),
            get("pg_status__http_unix_socket_mode"),
            &mut warnings,
        )?;
        let http_port = parse_http_port(get("pg_status__http_port"), http_unix_socket.is_some())?;

        let (current_dc, current_geo) = {
            let dc = parse_locality(env, &mut hosts, "dc", &mut warnings)?;
            let geo = parse_locality(env, &mut hosts, "geo", &mut warnings)?;
            (dc, geo)
        };

        for name in env.keys() {
            if name.starts_with("pg_status__") && !KNOWN_VARIABLES.contains(&name.as_str()) {
                warnings.push(format!("{name} is not a pg-status setting and is ignored"));
            }
        }

        Ok(Config {
            hosts,
            user: parse_name("pg_status__pg_user", get("pg_status__pg_user"))?,
            password: get("pg_status__pg_password").unwrap_or("postgres").to_owned(),
            database: parse_name("pg_status__pg_database", get("pg_status__pg_database"))?,
            connect_timeout: Duration::from_secs(parse_u64(
                "pg_status__connect_timeout",
                get("pg_status__connect_timeout"),
                2,
                0,
            )?),
            max_fails,
            sleep: parse_ms("pg_status__sleep_ms", get("pg_status__sleep_ms"), 5000)?,
            query_timeout: parse_ms("pg_status__query_timeout_ms", get("pg_status__query_timeout_ms"), 5000)?,
            conn_max_age: parse_ms("pg_status__conn_max_age_ms", get("pg_status__conn_max_age_ms"), 300_000)?,
            fast_sleep: Duration::from_millis(parse_u64(
                "pg_status__fast_sleep_ms",
                get("pg_status__fast_sleep_ms"),
                100,
                0,
            )?),
            fast_window: parse_ms("pg_status__fast_window_ms", get("pg_status__fast_window_ms"), 60_000)?,
            sync_max_lag_ms: parse_u64("pg_status__sync_max_lag_ms", get("pg_status__sync_max_lag_ms"), 1000, 0)?,
            sync_max_lag_bytes: parse_u64(
                "pg_status__sync_max_lag_bytes",
                get("pg_status__sync_max_lag_bytes"),
                1_000_000,
                0,
            )?,
            http_port,
            listen,
            http_unix_socket,
            log_level: parse_log_level(get("pg_status__log_level"))?,
            log_format: parse_log_format(get("pg_status__log_format"))?,
            split_brain: parse_split_brain(get("pg_status__split_brain"))?,
            max_wait: parse_max_wait(get("pg_status__max_wait_ms"))?,
            replica_fallback: parse_replica_fallback(get("pg_status__replica_fallback"))?,
            current_dc,
            current_geo,
            tls: parse_tls(env)?,
            require_auth: parse_require_auth(get("pg_status__require_auth").or(get("PGREQUIREAUTH")))?,
            warnings,
        })
    }
}

/// Parses a non-negative decimal integer of ASCII digits, at least `min`.
fn parse_u64(var: &str, value: Option<&str>, default: u64, min: u64) -> Result<u64, ConfigError> {
    let Some(raw) = value else { return Ok(default) };
    let text = raw.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(var, raw, "expected a non-negative whole number"));
    }
    let n: u64 = text.parse().map_err(|_| invalid(var, raw, "the number is too large"))?;
    if n < min {
        return Err(invalid(var, raw, format!("must be at least {min}")));
    }
    Ok(n)
}

/// A user or database name: anything but empty (PostgreSQL refuses an empty one at every poll).
fn parse_name(var: &str, value: Option<&str>) -> Result<String, ConfigError> {
    match value {
        None => Ok("postgres".to_owned()),
        Some(raw) if raw.trim().is_empty() => Err(invalid(var, raw, "must not be empty (the default is postgres)")),
        Some(raw) => Ok(raw.to_owned()),
    }
}

fn parse_max_wait(value: Option<&str>) -> Result<Duration, ConfigError> {
    const VAR: &str = "pg_status__max_wait_ms";
    let ms = parse_u64(VAR, value, 1000, 0)?;
    if ms > MAX_WAIT_LIMIT_MS {
        return Err(invalid(VAR, value.unwrap_or_default(), format!("must be at most {MAX_WAIT_LIMIT_MS}")));
    }
    Ok(Duration::from_millis(ms))
}

/// A comma-separated list of libpq's method names; the value names the methods pg-status may use.
fn parse_require_auth(value: Option<&str>) -> Result<AuthMethods, ConfigError> {
    const VAR: &str = "pg_status__require_auth";
    let Some(raw) = value else { return Ok(AuthMethods::ANY) };
    let names: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    let mut methods = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        let method = AuthMethod::from_name(item).ok_or_else(|| {
            invalid(
                VAR,
                raw,
                format!("{item:?} is not a method pg-status can use; expected some of {}", names.join(", ")),
            )
        })?;
        methods.push(method);
    }
    Ok(AuthMethods::only(&methods))
}

fn parse_ms(var: &str, value: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    parse_u64(var, value, default, 1).map(Duration::from_millis)
}

fn parse_port(var: &str, value: Option<&str>, default: u16) -> Result<u16, ConfigError> {
    let n = parse_u64(var, value, u64::from(default), 1)?;
    u16::try_from(n).map_err(|_| invalid(var, value.unwrap_or_default(), "a port is at most 65535"))
}

/// `pg_status__http_port`: 1-65535, or 0 (TCP off) when a Unix socket is configured.
fn parse_http_port(value: Option<&str>, unix_socket: bool) -> Result<u16, ConfigError> {
    const VAR: &str = "pg_status__http_port";
    let raw = value.unwrap_or_default();
    match parse_u64(VAR, value, 8000, 0)? {
        0 if unix_socket => Ok(0),
        0 => Err(invalid(
            VAR,
            raw,
            "must be at least 1; 0 turns TCP off, which needs pg_status__http_unix_socket (else nothing would listen)",
        )),
        n => u16::try_from(n).map_err(|_| invalid(VAR, raw, "a port is at most 65535")),
    }
}

/// `pg_status__http_unix_socket` and `pg_status__http_unix_socket_mode` (octal, like chmod's).
fn parse_unix_socket(
    path: Option<&str>,
    mode: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<UnixSocketConfig>, ConfigError> {
    const PATH: &str = "pg_status__http_unix_socket";
    const MODE: &str = "pg_status__http_unix_socket_mode";
    let mode = match mode {
        None => DEFAULT_UNIX_SOCKET_MODE,
        Some(raw) => {
            let text = raw.trim();
            let digits = text.strip_prefix("0o").unwrap_or(text);
            let parsed =
                (!digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
                    .then(|| u32::from_str_radix(digits, 8).ok())
                    .flatten()
                    .filter(|m| *m <= 0o777);
            parsed.ok_or_else(|| {
                invalid(MODE, raw, "expected permission bits in octal, like chmod's: 0660, 0600 or 0666 (at most 0777)")
            })?
        }
    };
    let Some(raw) = path else {
        if mode != DEFAULT_UNIX_SOCKET_MODE {
            warnings.push(format!("{MODE} is set but {PATH} is not: there is no Unix socket, so it is ignored"));
        }
        return Ok(None);
    };
    if raw.trim().is_empty() {
        return Err(invalid(PATH, raw, "must not be empty: give a path such as /run/pg-status/http.sock"));
    }
    if raw.len() > MAX_UNIX_SOCKET_PATH {
        return Err(invalid(
            PATH,
            raw,
            format!("is {} bytes long; a Unix socket path is at most {MAX_UNIX_SOCKET_PATH}", raw.len()),
        ));
    }
    Ok(Some(UnixSocketConfig { path: raw.to_owned(), mode }))
}

fn parse_ports(value: Option<&str>) -> Result<Vec<u16>, ConfigError> {
    const VAR: &str = "pg_status__pg_port";
    let Some(raw) = value else { return Ok(vec![5432]) };
    raw.split(',')
        .map(|item| {
            let item = item.trim();
            parse_port(VAR, Some(item), 5432).map_err(|_| {
                invalid(
                    VAR,
                    raw,
                    format!("{item:?} is not a port (1-65535); give one port or one per host, separated by ','"),
                )
            })
        })
        .collect()
}

fn parse_hosts(raw: &str, ports: &[u16]) -> Result<Vec<HostConfig>, ConfigError> {
    const VAR: &str = "pg_status__hosts";
    let items: Vec<&str> = raw.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(invalid(VAR, raw, "empty host entry; separate hosts with single ','"));
    }
    // One port for every host, or exactly one per host (DESIGN 8): any other count is a mistake to report,
    // not to guess around.
    if ports.len() != 1 && ports.len() != items.len() {
        return Err(invalid(
            "pg_status__pg_port",
            &ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            format!("{} ports for {} hosts; give one port for all or exactly one per host", ports.len(), items.len()),
        ));
    }
    let mut hosts: Vec<HostConfig> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // `ports` holds one port, or one per host (checked above); never empty (one default or >= 1 item).
        let list_port = ports[i.min(ports.len() - 1)];
        let (host, port) = split_host_port(item).map_err(|reason| invalid(VAR, raw, reason))?;
        let port = port.unwrap_or(list_port);
        if host.is_empty() {
            return Err(invalid(VAR, raw, format!("{item:?} has no host name")));
        }
        // One trailing dot (a fully qualified name) is not part of the length.
        let bare = host.strip_suffix('.').unwrap_or(host);
        if bare.len() > MAX_HOST_NAME {
            let start: String = host.chars().take(40).collect();
            return Err(invalid(
                VAR,
                raw,
                format!("{start:?}... has {} bytes; a host name has at most {MAX_HOST_NAME}", bare.len()),
            ));
        }
        if let Some(prev) =
            hosts.iter().find(|h| h.name == *item || (h.host.eq_ignore_ascii_case(host) && h.port == port))
        {
            return Err(invalid(VAR, raw, format!("{item:?} is listed twice (as {:?})", prev.name)));
        }
        hosts.push(HostConfig { name: (*item).to_owned(), host: host.to_owned(), port, dc: None, geo: None });
    }
    Ok(hosts)
}

/// The longest DNS name (RFC 1035: 255 octets on the wire); every IP address is shorter.
const MAX_HOST_NAME: usize = 253;

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_host_port(item: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = |p: &str| format!("{item:?}: {p:?} is not a port (1-65535)");
    let parse = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad_port(p)),
        }
    };
    if let Some(rest) = item.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{item:?}: missing ']'"));
        };
        if after.is_empty() {
            return Ok((host, None));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("{item:?}: expected ':port' after ']'"));
        };
        return Ok((host, Some(parse(port)?)));
    }
    match item.matches(':').count() {
        0 => Ok((item, None)),
        1 => {
            // Exactly one colon was counted, so split_once finds it.
            let (host, port) = item.split_once(':').unwrap_or((item, ""));
            Ok((host, Some(parse(port)?)))
        }
        // Several colons and no brackets: an IPv6 address without a port.
        _ => Ok((item, None)),
    }
}

fn parse_listen(http_host: Option<&str>, listen_address: Option<&str>) -> Result<ListenAddress, ConfigError> {
    let parse = |var: &str, raw: &str| -> Result<ListenAddress, ConfigError> {
        let text = raw.trim();
        if text == "*" {
            return Ok(ListenAddress::Any);
        }
        let unbracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        unbracketed
            .parse::<IpAddr>()
            .map(ListenAddress::Ip)
            .map_err(|_| invalid(var, raw, "expected an IPv4 or IPv6 address, or '*' for every interface"))
    };
    let host = http_host.map(|v| parse("pg_status__http_host", v)).transpose()?;
    let listen = listen_address.map(|v| parse("pg_status__http_listen_address", v)).transpose()?;
    match (host, listen) {
        (Some(a), Some(b)) if a != b => Err(invalid(
            "pg_status__http_listen_address",
            listen_address.unwrap_or_default(),
            format!("contradicts pg_status__http_host={:?}; set only one of them", http_host.unwrap_or_default()),
        )),
        (_, Some(addr)) | (Some(addr), None) => Ok(addr),
        (None, None) => Ok(ListenAddress::Ip(IpAddr::from([0, 0, 0, 0]))),
    }
}

fn parse_log_level(value: Option<&str>) -> Result<LogLevel, ConfigError> {
    let Some(raw) = value else { return Ok(LogLevel::Info) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warning" | "warn" => Ok(LogLevel::Warning),
        "error" => Ok(LogLevel::Error),
        "fatal" => Ok(LogLevel::Fatal),
        _ => Err(invalid("pg_status__log_level", raw, "expected debug, info, warning, warn, error or fatal")),
    }
}

/// `text` (the default) or `json`; anything else is refused.
pub fn parse_log_format(value: Option<&str>) -> Result<LogFormat, ConfigError> {
    let Some(raw) = value else { return Ok(LogFormat::Text) };
    LogFormat::from_name(raw.trim()).ok_or_else(|| invalid("pg_status__log_format", raw, "expected text or json"))
}

fn parse_split_brain(value: Option<&str>) -> Result<SplitBrainPolicy, ConfigError> {
    let Some(raw) = value else { return Ok(SplitBrainPolicy::HostOrder) };
    let wanted = raw.trim().to_ascii_lowercase();
    SplitBrainPolicy::ALL
        .into_iter()
        .find(|p| p.as_str() == wanted)
        .ok_or_else(|| invalid("pg_status__split_brain", raw, "expected host_order, timeline or refuse"))
}

fn parse_replica_fallback(value: Option<&str>) -> Result<ReplicaFallback, ConfigError> {
    let Some(raw) = value else { return Ok(ReplicaFallback::Master) };
    ReplicaFallback::from_name(raw.trim().to_ascii_lowercase().as_bytes())
        .ok_or_else(|| invalid("pg_status__replica_fallback", raw, "expected master or none"))
}

fn parse_tls(env: &BTreeMap<String, String>) -> Result<TlsConfig, ConfigError> {
    let path = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned);
    let mode = match env.get("PGSSLMODE") {
        None => SslMode::Prefer,
        // An empty value is libpq's default, as if unset.
        Some(raw) if raw.trim().is_empty() => SslMode::Prefer,
        Some(raw) => SslMode::ALL.into_iter().find(|m| m.as_str() == raw.trim()).ok_or_else(|| {
            invalid("PGSSLMODE", raw, "expected disable, allow, prefer, require, verify-ca or verify-full")
        })?,
    };
    let tls = TlsConfig {
        mode,
        root_cert: path("PGSSLROOTCERT"),
        cert: path("PGSSLCERT"),
        key: path("PGSSLKEY"),
        crl: path("PGSSLCRL"),
        // A HOME that could split a line is not used: the default files' paths appear in error lines.
        default_dir: path("HOME")
            .filter(|home| !home.chars().any(breaks_lines))
            .map(|home| format!("{}/.postgresql", home.trim_end_matches('/'))),
    };
    if tls.cert.is_some() != tls.key.is_some() {
        let (var, value) = match (&tls.cert, &tls.key) {
            (Some(cert), _) => ("PGSSLCERT", cert.as_str()),
            (_, key) => ("PGSSLKEY", key.as_deref().unwrap_or_default()),
        };
        return Err(invalid(var, value, "PGSSLCERT and PGSSLKEY must be given together"));
    }
    Ok(tls)
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads one locality dimension (`dc` or `geo`): the per-host list and this instance's own value.
/// Returns this instance's value when the dimension is usable, and fills each host's field.
fn parse_locality(
    env: &BTreeMap<String, String>,
    hosts: &mut [HostConfig],
    dim: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let list_var = format!("pg_status__hosts_{dim}");
    let current_var = format!("pg_status__current_{dim}");
    let env_var = format!("pg_status__current_{dim}_env");

    let indirect = match env.get(&env_var) {
        None => None,
        Some(name) => {
            let name = name.trim();
            if !valid_env_name(name) {
                return Err(invalid(
                    &env_var,
                    name,
                    "expected the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
            Some((name.to_owned(), env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())))
        }
    };
    let current = env.get(&current_var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let current = current.or_else(|| indirect.as_ref().and_then(|(_, v)| v.clone()));

    let Some(list) = env.get(&list_var) else {
        if current.is_some() {
            warnings.push(format!("locality by {dim} is off: {current_var} is set but {list_var} is not"));
        }
        return Ok(None);
    };
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.len() != hosts.len() || items.iter().any(|i| i.is_empty()) {
        warnings.push(format!(
            "locality by {dim} is off: {list_var}={list:?} must name one non-empty {dim} for each of the {} hosts",
            hosts.len()
        ));
        return Ok(None);
    }
    for (host, item) in hosts.iter_mut().zip(&items) {
        let value = Some((*item).to_owned());
        if dim == "dc" {
            host.dc = value;
        } else {
            host.geo = value;
        }
    }
    if current.is_none() {
        let why = match &indirect {
            Some((name, _)) => format!("{env_var} names {name}, which is not set"),
            None => format!("neither {current_var} nor {env_var} is set"),
        };
        warnings.push(format!("locality by {dim} is off: {why}"));
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn err(vars: &[(&str, &str)]) -> String {
        cfg(vars).expect_err("configuration must be rejected").to_string()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = cfg(&[("pg_status__hosts", "a,b")]).unwrap();
        assert_eq!(c.user, "postgres");
        assert_eq!(c.password, "postgres");
        assert_eq!(c.database, "postgres");
        assert_eq!(c.hosts.iter().map(|h| h.port).collect::<Vec<_>>(), [5432, 5432]);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.max_fails, 3);
        assert_eq!(c.sleep, Duration::from_millis(5000));
        assert_eq!(c.query_timeout, Duration::from_millis(5000));
        assert_eq!(c.conn_max_age, Duration::from_millis(300_000));
        assert_eq!(c.fast_sleep, Duration::from_millis(100));
        assert_eq!(c.fast_window, Duration::from_millis(60_000));
        assert_eq!(c.sync_max_lag_ms, 1000);
        assert_eq!(c.sync_max_lag_bytes, 1_000_000);
        assert_eq!(c.http_port, 8000);
        assert_eq!(c.listen, ListenAddress::Ip(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(c.split_brain, SplitBrainPolicy::HostOrder);
        assert_eq!(c.replica_fallback, ReplicaFallback::Master);
        assert_eq!(c.tls.mode, SslMode::Prefer);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn tls_files_fall_back_to_libpq_defaults_in_home() {
        let c = cfg(&[("pg_status__hosts", "a"), ("HOME", "/home/app/")]).unwrap();
        assert_eq!(c.tls.default_dir.as_deref(), Some("/home/app/.postgresql"));
        let everything = |_: &str| true;
        let resolved = c.tls.with_default_files(everything);
        assert_eq!(resolved.root_cert.as_deref(), Some("/home/app/.postgresql/root.crt"));
        assert_eq!(resolved.crl.as_deref(), Some("/home/app/.postgresql/root.crl"));
        assert_eq!(resolved.cert.as_deref(), Some("/home/app/.postgresql/postgresql.crt"));
        assert_eq!(resolved.key.as_deref(), Some("/home/app/.postgresql/postgresql.key"));

        // Only files that exist are used; a certificate brings its key along, present or not; a CRL without
        // root certificates is not used.
        let only_cert = c.tls.with_default_files(|p| p.ends_with("postgresql.crt") || p.ends_with("root.crl"));
        assert_eq!((only_cert.root_cert, only_cert.crl), (None, None));
        assert_eq!(only_cert.key.as_deref(), Some("/home/app/.postgresql/postgresql.key"));

        // Variables win over the defaults.
        let named = cfg(&[
            ("pg_status__hosts", "a"),
            ("HOME", "/home/app"),
            ("PGSSLROOTCERT", "/etc/ca.pem"),
            ("PGSSLCERT", "/etc/c.pem"),
            ("PGSSLKEY", "/etc/k.pem"),
        ])
        .unwrap()
        .tls
        .with_default_files(everything);
        assert_eq!(named.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!((named.cert.as_deref(), named.key.as_deref()), (Some("/etc/c.pem"), Some("/etc/k.pem")));

        // Without a usable HOME there are no defaults.
        for vars in [vec![("pg_status__hosts", "a")], vec![("pg_status__hosts", "a"), ("HOME", "/x\n/y")]] {
            let tls = cfg(&vars).unwrap().tls;
            assert_eq!(tls.with_default_files(everything), tls);
        }
    }

    #[test]
    fn hosts_take_their_own_port_or_the_port_list() {
        let c = cfg(&[
            ("pg_status__hosts", " db1 , db2:6432, [::1]:5433, ::1, db5"),
            ("pg_status__pg_port", "7000,7001,7002,7003,7004"),
        ])
        .unwrap();
        let got: Vec<(&str, &str, u16)> = c.hosts.iter().map(|h| (h.name.as_str(), h.host.as_str(), h.port)).collect();
        assert_eq!(
            got,
            [
                ("db1", "db1", 7000),
                ("db2:6432", "db2", 6432),
                ("[::1]:5433", "::1", 5433),
                ("::1", "::1", 7003),
                ("db5", "db5", 7004),
            ]
        );
        let one = cfg(&[("pg_status__hosts", "db1,db2,db3"), ("pg_status__pg_port", "7000")]).unwrap();
        assert!(one.hosts.iter().all(|h| h.port == 7000), "one port serves every host");
        for ports in ["7000,7001", "7000,7001,7002,7003"] {
            let e = err(&[("pg_status__hosts", "db1,db2,db3"), ("pg_status__pg_port", ports)]);
            let count = ports.split(',').count();
            assert!(e.contains("pg_status__pg_port") && e.contains(&format!("{count} ports for 3 hosts")), "{e}");
        }
    }

    #[test]
    fn host_names_longer_than_dns_allows_are_refused() {
        let longest = "a".repeat(253);
        assert!(cfg(&[("pg_status__hosts", &format!("{longest}:6432"))]).is_ok());
        assert!(cfg(&[("pg_status__hosts", &format!("{longest}."))]).is_ok(), "a fully qualified name");
        let e = err(&[("pg_status__hosts", &format!("db1,{longest}b"))]);
        assert!(e.contains("has 254 bytes; a host name has at most 253"), "{e}");
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        assert_eq!(err(&[]), ConfigError::MissingHosts.to_string());
        for (vars, needle) in [
            (vec![("pg_status__hosts", "a,,b")], r#"pg_status__hosts="a,,b""#),
            (vec![("pg_status__hosts", "")], r#"pg_status__hosts="""#),
            (vec![("pg_status__hosts", "a,a")], "listed twice"),
            (vec![("pg_status__hosts", "a:5432,a")], "listed twice"),
            (vec![("pg_status__hosts", "a:0")], r#""0" is not a port"#),
            (vec![("pg_status__hosts", "a:x")], r#""x" is not a port"#),
            (vec![("pg_status__hosts", "[::1")], "missing ']'"),
            (vec![("pg_status__hosts", "a"), ("pg_status__pg_port", "1,2")], "2 ports for 1 hosts"),
            (vec![("pg_status__hosts", "a"), ("pg_status__pg_port", "70000")], r#"pg_status__pg_port="70000""#),
            (vec![("pg_status__hosts", "a"), ("pg_status__sleep_ms", "abc")], r#"pg_status__sleep_ms="abc""#),
            (vec![("pg_status__hosts", "a"), ("pg_status__sleep_ms", "-5")], r#"pg_status__sleep_ms="-5""#),
            (vec![("pg_status__hosts", "a"), ("pg_status__sleep_ms", "0")], "must be at least 1"),
            (vec![("pg_status__hosts", "a"), ("pg_status__max_fails", "0")], r#"pg_status__max_fails="0""#),
            (vec![("pg_status__hosts", "a"), ("pg_status__query_timeout_ms", "0")], "pg_status__query_timeout_ms"),
            (vec![("pg_status__hosts", "a"), ("pg_status__fast_window_ms", "0")], "pg_status__fast_window_ms"),
            (vec![("pg_status__hosts", "a"), ("pg_status__fast_sleep_ms", "-1")], "pg_status__fast_sleep_ms"),
            (vec![("pg_status__hosts", "a"), ("pg_status__conn_max_age_ms", "1e3")], "pg_status__conn_max_age_ms"),
            (vec![("pg_status__hosts", "a"), ("pg_status__http_port", "65536")], "pg_status__http_port"),
            (vec![("pg_status__hosts", "a"), ("pg_status__sync_max_lag_bytes", "99999999999999999999")], "too large"),
            (vec![("pg_status__hosts", "a"), ("pg_status__http_host", "localhost")], "pg_status__http_host"),
            (vec![("pg_status__hosts", "a"), ("pg_status__log_level", "loud")], "pg_status__log_level"),
            (vec![("pg_status__hosts", "a"), ("pg_status__split_brain", "random")], "pg_status__split_brain"),
            (vec![("pg_status__hosts", "a"), ("pg_status__replica_fallback", "replica")], "expected master or none"),
            (vec![("pg_status__hosts", "a"), ("PGSSLMODE", "sometimes")], "PGSSLMODE"),
            (vec![("pg_status__hosts", "a"), ("PGSSLCERT", "/c.pem")], "PGSSLKEY must be given together"),
            (vec![("pg_status__hosts", "a"), ("pg_status__current_dc_env", "1BAD")], "pg_status__current_dc_env"),
            (vec![("pg_status__hosts", "a"), ("pg_status__http_port", "0")], "must be at least 1"),
            (vec![("pg_status__hosts", "a"), ("pg_status__pg_user", "")], "pg_status__pg_user=\"\": must not be empty"),
            (vec![("pg_status__hosts", "a"), ("pg_status__pg_database", " ")], "pg_status__pg_database"),
            (
                vec![("pg_status__hosts", "a"), ("pg_status__max_wait_ms", "18446744073709551615")],
                "must be at most 60000",
            ),
            (vec![("pg_status__hosts", "a"), ("pg_status__max_wait_ms", "60001")], "must be at most 60000"),
            (vec![("pg_status__hosts", "a\n127.0.6.9: master")], "control character U+000A"),
            (vec![("pg_status__hosts", "a"), ("pg_status__hosts_dc", "dc\u{2028}1")], "U+2028"),
            (vec![("pg_status__hosts", "a"), ("PGSSLROOTCERT", "/x\u{85}")], "U+0085"),
            (
                vec![("pg_status__hosts", "a"), ("pg_status__require_auth", "scram-sha-256,kerberos")],
                "\"kerberos\" is not a method",
            ),
            (vec![("pg_status__hosts", "a"), ("pg_status__require_auth", "")], "pg_status__require_auth"),
            (
                vec![("pg_status__hosts", "a"), ("pg_status__log_format", "yaml")],
                "pg_status__log_format=\"yaml\": expected text or json",
            ),
        ] {
            let message = err(&vars);
            assert!(message.contains(needle), "{vars:?}: {message:?} should contain {needle:?}");
        }
    }

    #[test]
    fn zero_is_accepted_where_it_means_something() {
        let c = cfg(&[
            ("pg_status__hosts", "a"),
            ("pg_status__connect_timeout", "0"),
            ("pg_status__sync_max_lag_ms", "0"),
            ("pg_status__sync_max_lag_bytes", "0"),
            ("pg_status__max_wait_ms", "0"),
        ])
        .unwrap();
        assert_eq!(
            (c.connect_timeout, c.sync_max_lag_ms, c.sync_max_lag_bytes, c.max_wait),
            (Duration::ZERO, 0, 0, Duration::ZERO)
        );
    }

    #[test]
    fn the_password_may_hold_any_character_and_is_never_shown() {
        let c = cfg(&[("pg_status__hosts", "a"), ("pg_status__pg_password", "tab\there")]).unwrap();
        assert_eq!(c.password, "tab\there");
    }

    #[test]
    fn require_auth_lists_the_methods_pg_status_may_use() {
        let c = cfg(&[("pg_status__hosts", "a")]).unwrap();
        assert_eq!(c.require_auth, AuthMethods::ANY);
        let c = cfg(&[("pg_status__hosts", "a"), ("pg_status__require_auth", "scram-sha-256")]).unwrap();
        assert!(c.require_auth.allows(AuthMethod::ScramSha256));
        assert!(!c.require_auth.allows(AuthMethod::Password) && !c.require_auth.allows(AuthMethod::Md5));
        assert!(!c.require_auth.allows(AuthMethod::None));
        // libpq's variable works too; ours wins.
        let c = cfg(&[("pg_status__hosts", "a"), ("PGREQUIREAUTH", "md5, none")]).unwrap();
        assert!(c.require_auth.allows(AuthMethod::Md5) && c.require_auth.allows(AuthMethod::None));
        let c = cfg(&[("pg_status__hosts", "a"), ("PGREQUIREAUTH", "md5"), ("pg_status__require_auth", "password")])
            .unwrap();
        assert_eq!(c.require_auth, AuthMethods::only(&[AuthMethod::Password]));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = cfg(&[("pg_status__hosts", "a"), ("pg_status__pg_password", "s3cret")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<hidden>"), "{shown}");
    }

    #[test]
    fn the_password_is_never_part_of_an_error() {
        let message =
            err(&[("pg_status__hosts", "a"), ("pg_status__pg_password", "s3cret"), ("pg_status__sleep_ms", "x")]);
        assert!(!message.contains("s3cret"));
    }

    #[test]
    fn unix_socket_and_tcp_off() {
        let with = |vars: &[(&str, &str)]| {
            let mut all = vec![("pg_status__hosts", "a")];
            all.extend_from_slice(vars);
            cfg(&all)
        };
        let c = with(&[]).expect("defaults");
        assert_eq!((c.http_port, c.http_unix_socket), (8000, None));
        let c = with(&[("pg_status__http_unix_socket", "/run/pg-status/http.sock")]).expect("socket");
        let socket = UnixSocketConfig { path: "/run/pg-status/http.sock".into(), mode: 0o660 };
        assert_eq!((c.http_port, c.http_unix_socket), (8000, Some(socket)));
        let c = with(&[("pg_status__http_unix_socket", "/s"), ("pg_status__http_port", "0")]).expect("unix only");
        assert_eq!(c.http_port, 0);
        for (mode, bits) in [("0600", 0o600), ("666", 0o666), ("0o640", 0o640), (" 0777 ", 0o777), ("0", 0)] {
            let c = with(&[("pg_status__http_unix_socket", "/s"), ("pg_status__http_unix_socket_mode", mode)]);
            assert_eq!(c.expect(mode).http_unix_socket.map(|s| s.mode), Some(bits), "{mode}");
        }
        for mode in ["0800", "rw-rw----", "", "1777", "07777", "-1", "0x1b6"] {
            let c = with(&[("pg_status__http_unix_socket", "/s"), ("pg_status__http_unix_socket_mode", mode)]);
            let e = c.expect_err(mode).to_string();
            assert!(e.starts_with(&format!("pg_status__http_unix_socket_mode={mode:?}")), "{e}");
        }
        let e = with(&[("pg_status__http_port", "0")]).expect_err("nothing would listen").to_string();
        assert!(e.contains("pg_status__http_port=\"0\"") && e.contains("pg_status__http_unix_socket"), "{e}");
        let long = format!("/{}", "x".repeat(MAX_UNIX_SOCKET_PATH));
        let e = with(&[("pg_status__http_unix_socket", &long)]).expect_err("too long").to_string();
        assert!(e.contains("at most 107"), "{e}");
        assert!(with(&[("pg_status__http_unix_socket", " ")]).is_err());
        let c = with(&[("pg_status__http_unix_socket_mode", "0600")]).expect("mode alone");
        assert!(c.warnings.iter().any(|w| w.contains("pg_status__http_unix_socket_mode")), "{:?}", c.warnings);
    }

    #[test]
    fn listen_address_accepts_ipv4_ipv6_and_star() {
        let listen = |vars: &[(&str, &str)]| {
            let mut all = vec![("pg_status__hosts", "a")];
            all.extend_from_slice(vars);
            cfg(&all).map(|c| c.listen)
        };
        assert_eq!(listen(&[("pg_status__http_host", "127.0.0.1")]), Ok(ListenAddress::Ip([127, 0, 0, 1].into())));
        assert_eq!(
            listen(&[("pg_status__http_listen_address", "[::1]")]),
            Ok(ListenAddress::Ip("::1".parse().unwrap()))
        );
        assert_eq!(listen(&[("pg_status__http_listen_address", "*")]), Ok(ListenAddress::Any));
        assert_eq!(
            listen(&[("pg_status__http_listen_address", "::"), ("pg_status__http_host", "::")]),
            Ok(ListenAddress::Ip("::".parse().unwrap()))
        );
        assert!(listen(&[("pg_status__http_listen_address", "::"), ("pg_status__http_host", "127.0.0.1")]).is_err());
    }

    #[test]
    fn locality_is_used_only_when_complete() {
        let c = cfg(&[
            ("pg_status__hosts", "a,b,c"),
            ("pg_status__hosts_dc", "x, y ,x"),
            ("pg_status__hosts_geo", "eu,eu"),
            ("pg_status__current_dc_env", "MY_DC"),
            ("MY_DC", "x"),
            ("pg_status__current_geo", "eu"),
        ])
        .unwrap();
        assert_eq!(c.current_dc.as_deref(), Some("x"));
        assert_eq!(c.hosts[1].dc.as_deref(), Some("y"));
        assert_eq!(c.current_geo, None, "an incomplete geo list turns that dimension off");
        assert!(c.hosts.iter().all(|h| h.geo.is_none()));
        assert!(c.warnings.iter().any(|w| w.contains("pg_status__hosts_geo")), "{:?}", c.warnings);

        let direct_wins = cfg(&[
            ("pg_status__hosts", "a"),
            ("pg_status__hosts_dc", "x"),
            ("pg_status__current_dc", "x"),
            ("pg_status__current_dc_env", "MY_DC"),
            ("MY_DC", "y"),
        ])
        .unwrap();
        assert_eq!(direct_wins.current_dc.as_deref(), Some("x"));

        let unset =
            cfg(&[("pg_status__hosts", "a"), ("pg_status__hosts_dc", "x"), ("pg_status__current_dc_env", "NOPE")])
                .unwrap();
        assert_eq!(unset.current_dc, None);
        assert!(unset.warnings.iter().any(|w| w.contains("NOPE")), "{:?}", unset.warnings);
    }

    #[test]
    fn unknown_settings_are_warned_about() {
        let c = cfg(&[("pg_status__hosts", "a"), ("pg_status__sleep", "5")]).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("pg_status__sleep ")), "{:?}", c.warnings);
    }
}
