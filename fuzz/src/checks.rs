//! The checks behind pg-status's fuzz targets, shared by `cargo fuzz` and the corpus replay test.
//!
//! Each `check_*` function takes raw bytes, decodes them in the simple way its documentation describes,
//! runs the core and panics when the core panics or answers something DESIGN.md does not allow. Expected
//! answers are derived here from the design's text (routes, parameters, filters, election, lag), not from
//! the core's own helpers, so a core that is consistently wrong is still caught.
//!
//! `core/tests/fuzz_corpus.rs` includes this file by path, so it may use only pg-status-core, serde_json and
//! std, and must build on the workspace's minimum Rust version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_status_core::config::{Config, ConfigError, ReplicaFallback, SplitBrainPolicy, KNOWN_VARIABLES};
use pg_status_core::http::{self, Prepared, Response};
use pg_status_core::lsn::Lsn;
use pg_status_core::metrics;
use pg_status_core::observation::{
    Observation, ObservationError, Receiver, Role, POLL_COLUMNS, POLL_COLUMNS_WITHOUT_RECEIVER,
};
use pg_status_core::snapshot::{Health, HostInput, HostName, HostSpec, HostTimes, Settings, Snapshot};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------------
// Decoding helpers

/// Reads fuzz input front to back; past the end every read yields zeros, so every input decodes.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// A number: a byte below 0xFE is its own value (small values make thresholds and positions meet);
    /// 0xFE is followed by a little-endian u16 and 0xFF by a little-endian u64.
    fn number(&mut self) -> u64 {
        match self.byte() {
            0xFE => self.little_endian(2),
            0xFF => self.little_endian(8),
            b => u64::from(b),
        }
    }

    fn little_endian(&mut self, len: usize) -> u64 {
        (0..len).fold(0, |acc, i| acc | u64::from(self.byte()) << (8 * i))
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// lsn

/// PostgreSQL's `pg_lsn` text (DESIGN 6): `HEX/HEX`, each half 1 to 8 hex digits, nothing around them.
fn reference_lsn(text: &[u8]) -> Option<Lsn> {
    let slash = text.iter().position(|&b| b == b'/')?;
    let half = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || digits.len() > 8 {
            return None;
        }
        digits.iter().try_fold(0u64, |acc, &d| Some(acc * 16 + u64::from(hex_digit(d)?)))
    };
    Some(Lsn(half(&text[..slash])? << 32 | half(&text[slash + 1..])?))
}

/// The canonical spelling of a valid LSN text: each half in uppercase, without leading zeros.
fn canonical_lsn(text: &[u8]) -> String {
    let halves: Vec<String> = text
        .split(|&b| b == b'/')
        .map(|half| {
            let start = half.iter().position(|&b| b != b'0').unwrap_or(half.len().saturating_sub(1));
            String::from_utf8_lossy(&half[start..]).to_ascii_uppercase()
        })
        .collect();
    halves.join("/")
}

/// Target `lsn`. Input: the bytes are the text to parse; their first 8 bytes (zero-padded, little-endian)
/// are also a position to print.
///
/// Checks: parsing never panics and accepts exactly `HEX/HEX` with 1-8 hex digits a side (bytes and `str`
/// parsing agree); a parsed position prints as the input in canonical form (uppercase, no leading zeros);
/// every position prints canonically and parses back to itself.
pub fn check_lsn(data: &[u8]) {
    let parsed = Lsn::parse_bytes(data);
    let shown = String::from_utf8_lossy(data);
    assert_eq!(parsed, reference_lsn(data), "Lsn::parse_bytes({shown:?})");
    if let Ok(text) = std::str::from_utf8(data) {
        let from_str = text.parse::<Lsn>();
        if let Err(error) = &from_str {
            let _ = error.to_string();
        }
        assert_eq!(from_str.ok(), parsed, "{text:?}.parse::<Lsn>() disagrees with Lsn::parse_bytes");
    }
    if let Some(lsn) = parsed {
        assert_eq!(lsn.to_string(), canonical_lsn(data), "{shown:?} parsed as {lsn:?} prints differently");
    }

    let mut word = [0u8; 8];
    let len = data.len().min(8);
    word[..len].copy_from_slice(&data[..len]);
    let lsn = Lsn(u64::from_le_bytes(word));
    let printed = lsn.to_string();
    assert_eq!(reference_lsn(printed.as_bytes()), Some(lsn), "{lsn:?} prints as {printed:?}");
    assert_eq!(printed.parse::<Lsn>(), Ok(lsn), "{printed:?} does not parse back");
    assert_eq!(canonical_lsn(printed.as_bytes()), printed, "{lsn:?} prints non-canonically");
}

// ---------------------------------------------------------------------------------------------------------
// config

/// Names that a one-byte variable name stands for, after [`KNOWN_VARIABLES`]: libpq's TLS variables and two
/// variables for `pg_status__current_*_env` to point at.
const EXTRA_VARIABLES: [&str; 7] =
    ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "MY_DC", "MY_GEO"];

fn variable_name(b: u8) -> &'static str {
    let i = usize::from(b) % (KNOWN_VARIABLES.len() + EXTRA_VARIABLES.len());
    KNOWN_VARIABLES.get(i).copied().unwrap_or_else(|| EXTRA_VARIABLES[i - KNOWN_VARIABLES.len()])
}

/// Decodes the `config` input: `NAME=VALUE` entries separated by NUL bytes, as in `/proc/self/environ`.
/// A name of exactly one byte `b` stands for a real variable: the `b % N`-th of [`KNOWN_VARIABLES`] followed
/// by `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLCRL`, `MY_DC`, `MY_GEO` (N names in all).
/// An entry without `=` has an empty value; empty names are skipped; a later entry replaces an earlier one;
/// invalid UTF-8 is replaced by U+FFFD.
pub fn decode_env(data: &[u8]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for entry in data.split(|&b| b == 0) {
        let (name, value) = match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (&entry[..eq], &entry[eq + 1..]),
            None => (entry, &entry[entry.len()..]),
        };
        let name = match name {
            [] => continue,
            [b] => variable_name(*b).to_owned(),
            _ => text(name),
        };
        env.insert(name, text(value));
    }
    env
}

const PASSWORD_VAR: &str = "pg_status__pg_password";
const SENTINEL_PASSWORD: &str = "pw\u{1}sentinel\u{2}";

/// Target `config`. Input: an environment, see [`decode_env`].
///
/// Checks: [`Config::from_map`] never panics; an error names a variable that is set (or
/// `pg_status__hosts`, when that is missing) and its message contains the name; an accepted configuration
/// holds the hosts as written (split on `,`, trimmed, non-empty, no duplicate), non-zero ports, periods and
/// `max_fails`, and the numbers as given; the password decides nothing and appears in no error or warning.
pub fn check_config(data: &[u8]) {
    let env = decode_env(data);
    let result = Config::from_map(&env);
    match &result {
        Ok(config) => check_accepted_config(&env, config),
        Err(error) => check_config_error(&env, error),
    }

    // The same environment with a recognisable password: it must not change the outcome or be shown.
    let mut other = env.clone();
    other.insert(PASSWORD_VAR.to_owned(), SENTINEL_PASSWORD.to_owned());
    let leak_visible =
        !env.iter().any(|(k, v)| k != PASSWORD_VAR && (k.contains(SENTINEL_PASSWORD) || v.contains(SENTINEL_PASSWORD)));
    match (&result, Config::from_map(&other)) {
        (Ok(_), Ok(config)) => {
            assert_eq!(config.password, SENTINEL_PASSWORD);
            for warning in &config.warnings {
                assert!(
                    !leak_visible || !warning.contains(SENTINEL_PASSWORD),
                    "a warning shows the password: {warning}"
                );
            }
        }
        (Err(error), Err(other_error)) => {
            let message = other_error.to_string();
            assert!(!leak_visible || !message.contains(SENTINEL_PASSWORD), "an error shows the password: {message}");
            assert_eq!(error.to_string(), message, "the password changed the error");
        }
        (first, second) => panic!("the password decided validity: {first:?} but {second:?}"),
    }
}

fn check_config_error(env: &BTreeMap<String, String>, error: &ConfigError) {
    let message = error.to_string();
    let var = match error {
        ConfigError::MissingHosts => {
            assert!(!env.contains_key("pg_status__hosts"), "MissingHosts although pg_status__hosts is set");
            "pg_status__hosts"
        }
        ConfigError::Invalid { var, .. } | ConfigError::NotUnicode { var } => {
            assert!(env.contains_key(var.as_str()), "the error names {var}, which is not set: {message}");
            var.as_str()
        }
    };
    assert!(message.contains(var), "the message does not name {var}: {message}");
}

fn check_accepted_config(env: &BTreeMap<String, String>, config: &Config) {
    let hosts = env.get("pg_status__hosts").expect("accepted without pg_status__hosts");
    let names: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    let written: Vec<&str> = hosts.split(',').map(str::trim).collect();
    assert_eq!(names, written, "hosts differ from pg_status__hosts={hosts:?}");
    for (i, host) in config.hosts.iter().enumerate() {
        assert!(!host.name.is_empty(), "an empty host entry was accepted: {hosts:?}");
        assert_ne!(host.port, 0, "port 0 for {:?}", host.name);
        assert!(!names[..i].contains(&host.name.as_str()), "{:?} is listed twice", host.name);
    }
    assert!(config.max_fails >= 1, "max_fails 0 accepted");
    for (what, period) in
        [("sleep", config.sleep), ("query_timeout", config.query_timeout), ("age", config.conn_max_age)]
    {
        assert!(!period.is_zero(), "a zero {what} was accepted");
    }
    let numbers = [
        ("pg_status__max_fails", u64::from(config.max_fails)),
        ("pg_status__sync_max_lag_ms", config.sync_max_lag_ms),
        ("pg_status__sync_max_lag_bytes", config.sync_max_lag_bytes),
        ("pg_status__http_port", u64::from(config.http_port)),
    ];
    for (var, value) in numbers {
        if let Some(raw) = env.get(var) {
            assert_eq!(raw.trim().parse::<u64>().ok(), Some(value), "{var}={raw:?} was read as {value}");
        }
    }
    for (var, value) in [("pg_status__pg_user", &config.user), ("pg_status__pg_database", &config.database)] {
        assert_eq!(env.get(var).map_or("postgres", String::as_str), value.as_str(), "{var}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// observation

/// The poll query's columns, in order.
const COLUMNS: [&str; POLL_COLUMNS] = [
    "in_recovery",
    "current_lsn",
    "receive_lsn",
    "replay_lsn",
    "replay_delay_ms",
    "wal_file",
    "receiver_pid",
    "received_tli",
    "latest_end_lsn",
];

/// Decodes the `observation` input: the row's values separated by NUL bytes (PostgreSQL text never holds
/// NUL); a value that is the single byte 0xFF (never in UTF-8) is SQL NULL; other values are UTF-8 with
/// invalid sequences replaced by U+FFFD. The empty input is a row of no columns.
pub fn decode_row(data: &[u8]) -> Vec<Option<String>> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0).map(|v| if v == [0xFF] { None } else { Some(text(v)) }).collect()
}

/// What the poll row should parse to, from the column documentation of `POLL_QUERY` (and of the form
/// without the WAL receiver, its first columns): the observation, or the indexes of the columns at fault
/// (empty for a wrong number of columns).
fn reference_observation(row: &[Option<&str>]) -> Result<Observation, Vec<usize>> {
    let full = row.len() == POLL_COLUMNS;
    if !full && row.len() != POLL_COLUMNS_WITHOUT_RECEIVER {
        return Err(Vec::new());
    }
    let mut faults = Vec::new();
    let role = match row[0] {
        Some("t") => Some(Role::Replica),
        Some("f") => Some(Role::Master),
        _ => {
            faults.push(0);
            None
        }
    };
    let mut lsn = |i: usize| match row[i] {
        None => None,
        Some(v) => {
            let parsed = reference_lsn(v.as_bytes());
            if parsed.is_none() {
                faults.push(i);
            }
            parsed
        }
    };
    let (current_lsn, receive_lsn, replay_lsn) = (lsn(1), lsn(2), lsn(3));
    // A delay is a bigint; a negative one (the replica's clock behind the master's) counts as none.
    let replay_delay_ms = row[4].and_then(|v| match v.parse::<i64>() {
        Ok(ms) => Some(u64::try_from(ms).unwrap_or(0)),
        Err(_) => {
            faults.push(4);
            None
        }
    });
    // A replica's WAL receiver, when the row has its columns: the pid alone means its details are hidden.
    // A master's receiver columns are not looked at.
    let replica_receiver = full && role == Some(Role::Replica);
    let latest_end_lsn = row.get(8).copied().flatten().filter(|_| replica_receiver).and_then(|v| {
        let parsed = reference_lsn(v.as_bytes());
        if parsed.is_none() {
            faults.push(8);
        }
        parsed
    });
    let received_tli = if replica_receiver {
        row[7].and_then(|v| {
            let parsed = v.parse::<u32>().ok();
            if parsed.is_none() {
                faults.push(7);
            }
            parsed
        })
    } else {
        None
    };
    let receiver = if !full {
        Receiver::NotRead
    } else if replica_receiver && row[6].is_some() && row[7].is_none() && row[8].is_none() {
        Receiver::DetailsHidden
    } else {
        Receiver::Readable
    };
    // A master's timeline is the first 8 hex digits of its 24-character WAL file name; a replica's is the
    // streamed timeline number. The other role's column is not looked at.
    let timeline = match role {
        Some(Role::Master) => row[5].and_then(|name| {
            let tli = (name.len() == 24).then(|| name.get(..8)).flatten();
            let parsed = tli.and_then(|t| u32::from_str_radix(t, 16).ok());
            if parsed.is_none() {
                faults.push(5);
            }
            parsed
        }),
        Some(Role::Replica) => received_tli,
        None => None,
    };
    if role == Some(Role::Master) && row[1].is_none() {
        faults.push(1);
    }
    match role {
        Some(role) if faults.is_empty() => Ok(Observation {
            role,
            current_lsn,
            receive_lsn,
            replay_lsn,
            replay_delay_ms,
            timeline,
            latest_end_lsn,
            receiver,
        }),
        _ => Err(faults),
    }
}

/// Target `observation`. Input: one reply row, see [`decode_row`].
///
/// Checks: [`Observation::from_row`] never panics; it accepts exactly the rows the column documentation
/// allows, with the values they hold; an error names a column at fault with its text, or the row's true
/// number of columns, or a master without a WAL position.
pub fn check_observation(data: &[u8]) {
    let values = decode_row(data);
    let row: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
    let result = Observation::from_row(&row);
    match (&result, reference_observation(&row)) {
        (Ok(observation), Ok(expected)) => assert_eq!(observation, &expected, "row {row:?}"),
        (Err(error), Err(faults)) => {
            let _ = error.to_string();
            match error {
                ObservationError::Columns(n) => {
                    assert_eq!(*n, row.len(), "row {row:?}");
                    assert!(![POLL_COLUMNS, POLL_COLUMNS_WITHOUT_RECEIVER].contains(n), "row {row:?}");
                }
                ObservationError::Value { column, value } => {
                    let i = COLUMNS.iter().position(|c| c == column).expect("an unknown column name");
                    assert!(faults.contains(&i), "{column} blamed, but it holds a valid value: {row:?}");
                    assert_eq!(value.as_str(), row[i].unwrap_or("NULL"), "{column} blamed for the wrong text");
                }
                ObservationError::MasterWithoutLsn => {
                    assert_eq!((row[0], row[1]), (Some("f"), None), "MasterWithoutLsn for {row:?}");
                }
            }
        }
        (result, expected) => panic!("row {row:?}: parsed as {result:?}, expected {expected:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// http_request: decoding

/// Data centres and regions a host or this instance may be in (index 0 of a selector is "none").
const PLACES: [&str; 3] = ["a", "b", "c"];
const HEALTHS: [Health; 4] = [Health::Unknown, Health::Alive, Health::PossiblyDead, Health::Dead];

/// One host of a decoded `http_request` case.
#[derive(Debug)]
pub struct CaseHost {
    /// Its name, unique in the case.
    pub name: String,
    /// Its data centre.
    pub dc: Option<&'static str>,
    /// Its region.
    pub geo: Option<&'static str>,
    /// Its health.
    pub health: Health,
    /// Its last observation.
    pub last: Option<Observation>,
    /// When that observation arrived, in milliseconds after the case's start.
    pub observed_at: Option<u64>,
    /// When and where the host's WAL stood at its recent polls as master, oldest first.
    pub wal_history: Vec<(u64, Lsn)>,
}

/// A decoded `http_request` input: a request and the snapshot state it is answered from.
#[derive(Debug)]
pub struct HttpCase {
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Accept` header, if sent.
    pub accept: Option<Vec<u8>>,
    /// Whether every host has finished its first iteration.
    pub ready: bool,
    /// Thresholds, locality switches and split-brain policy.
    pub settings: Settings,
    /// This instance's data centre.
    pub current_dc: Option<&'static str>,
    /// This instance's region.
    pub current_geo: Option<&'static str>,
    /// The round-robin cursor before the request.
    pub cursor: usize,
    /// The hosts, in configuration order.
    pub hosts: Vec<CaseHost>,
    /// The snapshot is derived with the hosts' observation times and WAL histories.
    pub timed: bool,
}

fn place(selector: u8) -> Option<&'static str> {
    PLACES.get(usize::from(selector & 3).checked_sub(1)?).copied()
}

/// Decodes the `http_request` input, in two parts split at the first NUL byte.
///
/// 1. The request as text lines, `METHOD \n TARGET \n ACCEPT` (invalid UTF-8 in the method and target is
///    replaced by U+FFFD; the Accept header is raw bytes). An empty method is `GET`; without a second newline
///    no Accept header is sent.
/// 2. The snapshot, in bytes (missing bytes read as 0; a *number* is a byte below 0xFE, or 0xFE and a
///    little-endian u16, or 0xFF and a little-endian u64):
///    - flags: bit 0 set = not ready, bit 1 = locality by DC, bit 2 = locality by region, bit 3 = split
///      brain by timeline, bit 4 = refuse a split brain (it wins over bit 3), bit 5 = replica routes do not
///      fall back to the master by default;
///    - numbers: `sync_max_lag_ms`, `sync_max_lag_bytes`, `max_wait_ms`, the round-robin cursor;
///    - a byte: bits 0-1 this instance's DC, bits 2-3 its region (0 none, 1-3 "a", "b", "c");
///    - a byte: the number of hosts, modulo 9; then for each host:
///      - a length byte (modulo 17) and that many bytes of name; an empty name, one with `,` or surrounding
///        whitespace, or a repeated one becomes `h<index>` (with `'` appended until unique);
///      - a byte: bits 0-1 health (unknown, alive, possibly dead, dead), bit 2 an observation follows, bit
///        3 its role is master (else replica), bits 4-5 DC, bits 6-7 region;
///      - with an observation, a byte saying which optional fields follow, as numbers: bit 0 current LSN,
///        bit 1 receive LSN, bit 2 replay LSN, bit 3 replay delay, bit 4 timeline (low 32 bits), bit 5 the WAL
///        receiver's latest end LSN;
///    - a byte: bit 0 set = derive with observation times (else no times are known); then for each host a
///      byte (bit 0: an observation time follows, as a number of ms; bits 1-7 modulo 5: the number of WAL
///      samples that follow, each a number of ms after the previous sample and an LSN number). Times are
///      capped at 2^40 ms.
pub fn decode_http(data: &[u8]) -> HttpCase {
    let (request, state) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut lines = request.splitn(3, |&b| b == b'\n');
    let method = match lines.next().unwrap_or_default() {
        [] => "GET".to_owned(),
        method => text(method),
    };
    let target = text(lines.next().unwrap_or_default());
    let accept = lines.next().map(<[u8]>::to_vec);

    let mut r = Reader { data: state };
    let flags = r.byte();
    let sync_max_lag_ms = r.number();
    let sync_max_lag_bytes = r.number();
    let max_wait_ms = r.number();
    let settings = Settings {
        sync_max_lag_ms,
        sync_max_lag_bytes,
        locality_dc: flags & 2 != 0,
        locality_geo: flags & 4 != 0,
        split_brain: if flags & 16 != 0 {
            SplitBrainPolicy::Refuse
        } else if flags & 8 != 0 {
            SplitBrainPolicy::Timeline
        } else {
            SplitBrainPolicy::HostOrder
        },
        max_wait_ms,
        replica_fallback: if flags & 32 != 0 { ReplicaFallback::None } else { ReplicaFallback::Master },
    };
    // Truncation on 32-bit targets is fine: any cursor value is allowed.
    let cursor = r.number() as usize;
    let here = r.byte();
    let count = r.byte() % 9;
    let mut hosts: Vec<CaseHost> = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let len = usize::from(r.byte() % 17);
        let mut name = text(r.bytes(len));
        if name.is_empty() || name.contains(',') || name.trim() != name || hosts.iter().any(|h| h.name == name) {
            name = format!("h{i}");
            while hosts.iter().any(|h| h.name == name) {
                name.push('\'');
            }
        }
        let bits = r.byte();
        let last = (bits & 4 != 0).then(|| {
            let fields = r.byte();
            let mut field = |bit: u8| (fields & bit != 0).then(|| r.number());
            Observation {
                role: if bits & 8 != 0 { Role::Master } else { Role::Replica },
                current_lsn: field(1).map(Lsn),
                receive_lsn: field(2).map(Lsn),
                replay_lsn: field(4).map(Lsn),
                replay_delay_ms: field(8),
                timeline: field(16).map(|t| (t & 0xFFFF_FFFF) as u32),
                latest_end_lsn: field(32).map(Lsn),
                receiver: Receiver::Readable,
            }
        });
        hosts.push(CaseHost {
            name,
            dc: place(bits >> 4),
            geo: place(bits >> 6),
            health: HEALTHS[usize::from(bits & 3)],
            last,
            observed_at: None,
            wal_history: Vec::new(),
        });
    }
    let timed = r.byte() & 1 != 0;
    if timed {
        const MAX_MS: u64 = 1 << 40;
        for host in &mut hosts {
            let bits = r.byte();
            host.observed_at = (bits & 1 != 0).then(|| r.number().min(MAX_MS));
            let mut at = 0u64;
            for _ in 0..(bits >> 1) % 5 {
                at = at.saturating_add(r.number()).min(MAX_MS);
                host.wal_history.push((at, Lsn(r.number())));
            }
        }
    }
    HttpCase {
        method,
        target,
        accept,
        ready: flags & 1 == 0,
        settings,
        current_dc: place(here),
        current_geo: place(here >> 2),
        cursor,
        hosts,
        timed,
    }
}

// ---------------------------------------------------------------------------------------------------------
// http_request: what the design says

/// One host as the design says a snapshot shows it (DESIGN 1, 3 and 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    role: Option<Role>,
    lag_ms: Option<u64>,
    lag_bytes: Option<u64>,
    lsn: Option<Lsn>,
    sync_by_time: bool,
    sync_by_bytes: bool,
    timeline: Option<u32>,
}

/// The measurement of a host that may be used: its last observation while alive or possibly dead.
fn usable(host: &CaseHost) -> Option<&Observation> {
    host.last.as_ref().filter(|_| matches!(host.health, Health::Alive | Health::PossiblyDead))
}

/// DESIGN 4: the first host in host order that was seen as master and is alive, else the first possibly
/// dead one; with the timeline policy, the highest timeline among them (an unknown timeline is lowest),
/// host order breaking ties.
fn reference_master(case: &HttpCase) -> Option<usize> {
    if !refused_claimants(case).is_empty() {
        return None;
    }
    let by_timeline = case.settings.split_brain == SplitBrainPolicy::Timeline;
    [Health::Alive, Health::PossiblyDead].iter().find_map(|&health| {
        let mut best: Option<(usize, Option<u32>)> = None;
        for (i, host) in case.hosts.iter().enumerate() {
            let Some(obs) = host.last.as_ref().filter(|o| host.health == health && o.role == Role::Master) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, timeline)) => by_timeline && obs.timeline > timeline,
            };
            if better {
                best = Some((i, obs.timeline));
            }
        }
        best.map(|(i, _)| i)
    })
}

/// DESIGN 4, `refuse`: the alive hosts that claim master, in host order, when there are two or more and
/// the policy refuses a split brain; otherwise none.
fn refused_claimants(case: &HttpCase) -> Vec<usize> {
    let claims: Vec<usize> = (0..case.hosts.len())
        .filter(|&i| {
            let h = &case.hosts[i];
            h.health == Health::Alive && h.last.as_ref().is_some_and(|o| o.role == Role::Master)
        })
        .collect();
    if case.settings.split_brain == SplitBrainPolicy::Refuse && claims.len() > 1 {
        claims
    } else {
        Vec::new()
    }
}

/// The port the case's host `i` is polled on.
fn case_port(i: usize) -> u16 {
    5432 + u16::try_from(i).unwrap_or(0)
}

/// DESIGN 1, 3 and 7: what each host shows. Dead or never seen hosts show no measurement; a master lags
/// by nothing; a replica lags, in bytes, from its replay position up to the furthest of the master's last
/// position and its own receive position (a missing replay position counts as 0), and in time by its
/// replay delay, unless it has replayed everything the master had. With observation times, the time lag
/// is also at most the time from the newest master WAL sample the replica has replayed to its observation.
fn reference_views(case: &HttpCase, master: Option<usize>) -> Vec<View> {
    let master_lsn = master.and_then(|m| case.hosts[m].last.as_ref()).and_then(|o| o.current_lsn);
    let history: &[(u64, Lsn)] = match master {
        Some(m) if case.timed => &case.hosts[m].wal_history,
        _ => &[],
    };
    let settings = &case.settings;
    case.hosts
        .iter()
        .map(|host| {
            let Some(obs) = usable(host) else {
                return View {
                    role: None,
                    lag_ms: None,
                    lag_bytes: None,
                    lsn: None,
                    sync_by_time: false,
                    sync_by_bytes: false,
                    timeline: None,
                };
            };
            let (lag_ms, lag_bytes, lsn) = match obs.role {
                Role::Master => (0, 0, obs.current_lsn),
                Role::Replica => {
                    let replay = obs.replay_lsn.map_or(0, |l| l.0);
                    let furthest =
                        [master_lsn, obs.receive_lsn, obs.latest_end_lsn].iter().flatten().map(|l| l.0).max();
                    let lag_bytes = furthest.map_or(0, |f| f.saturating_sub(replay));
                    let caught_up = matches!((master_lsn, obs.replay_lsn), (Some(m), Some(r)) if r.0 >= m.0);
                    let replayed_sample = |r: Lsn| history.iter().filter(|(_, l)| l.0 <= r.0).map(|(at, _)| *at).max();
                    let bound = match (host.observed_at, obs.replay_lsn) {
                        (Some(seen), Some(r)) if case.timed => replayed_sample(r).map(|at| seen.saturating_sub(at)),
                        _ => None,
                    };
                    let delay = obs.replay_delay_ms.unwrap_or(0);
                    let lag_ms = if caught_up { 0 } else { bound.map_or(delay, |b| delay.min(b)) };
                    (lag_ms, lag_bytes, obs.replay_lsn)
                }
            };
            View {
                role: Some(obs.role),
                lag_ms: Some(lag_ms),
                lag_bytes: Some(lag_bytes),
                lsn,
                sync_by_time: lag_ms <= settings.sync_max_lag_ms,
                sync_by_bytes: lag_bytes <= settings.sync_max_lag_bytes,
                timeline: obs.timeline,
            }
        })
        .collect()
}

/// The replicas a selection route may hand out (DESIGN 5), as read from the request.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    max_lag_ms: Option<u64>,
    max_lag_bytes: Option<u64>,
    /// Either threshold is enough (`_or_`), instead of both.
    either: bool,
    min_lsn: Option<Lsn>,
    /// `/most_sync_by_bytes` rather than round robin.
    most_sync: bool,
    /// What `wait_ms` should come to: capped by `max_wait_ms`, and 0 without `min_lsn`.
    wait_ms: u64,
    /// With `min_lsn` under the timeline policy: the elected master's timeline, the only one a replica may
    /// show to be compared with the write.
    timeline: Option<u32>,
    /// Fall back to the master when no replica qualifies.
    fallback: bool,
    /// `host=` on a route that names one host: check that host (by index) instead of choosing.
    check: Option<usize>,
    /// `/replicas`: list every candidate.
    list: bool,
}

impl Wanted {
    fn admits(&self, view: &View) -> bool {
        let (Some(Role::Replica), Some(lag_ms), Some(lag_bytes)) = (view.role, view.lag_ms, view.lag_bytes) else {
            return false;
        };
        let time = self.max_lag_ms.map(|max| lag_ms <= max);
        let bytes = self.max_lag_bytes.map(|max| lag_bytes <= max);
        let lag = match (time, bytes) {
            (Some(t), Some(b)) => {
                if self.either {
                    t || b
                } else {
                    t && b
                }
            }
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => true,
        };
        let fresh = match self.min_lsn {
            Some(min) => view.lsn.is_some_and(|lsn| lsn.0 >= min.0),
            None => true,
        };
        let same_history = self.timeline.is_none_or(|t| view.timeline == Some(t));
        lag && fresh && same_history
    }
}

/// What a request should get (DESIGN 0 and 5-7).
#[derive(Debug)]
enum Expected {
    /// Not one of our paths: 404, empty body.
    UnknownPath,
    /// A method other than GET or HEAD: 405 with `Allow: GET, HEAD`.
    WrongMethod,
    /// 503 until every host was polled once.
    NotReady,
    /// `/live` and `/ready`: 200 `OK`.
    Okay,
    /// `/version`.
    Version,
    /// `/hosts`.
    Hosts,
    /// `/master`, with the host index of `host=` when given.
    Master(Option<usize>),
    /// `host=` naming a host that is not monitored: 404, empty body.
    UnknownHost,
    /// `/status` with this `host` parameter, if given.
    Status(Option<Vec<u8>>),
    /// 400 with this `error_text`.
    Invalid(&'static str),
    /// A replica choice.
    Select(Wanted),
    /// `/metrics`, answered ready or not.
    Metrics,
}

const ROUTES: [&str; 14] = [
    "/replicas",
    "/master",
    "/replica",
    "/sync_by_time",
    "/sync_by_bytes",
    "/sync_by_time_or_bytes",
    "/sync_by_time_and_bytes",
    "/most_sync_by_bytes",
    "/hosts",
    "/status",
    "/version",
    "/live",
    "/ready",
    "/metrics",
];

/// `%XX` escapes decoded; a `%` without two hex digits after it is kept as it is.
fn unescape(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex_digit(*h).zip(hex_digit(*l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// DESIGN 6: the decoded value of the first `name=value` pair whose decoded name is `name`; a pair without
/// `=` has an empty value.
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (key, value) = match pair.find('=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, ""),
        };
        (unescape(key) == name.as_bytes()).then(|| unescape(value))
    })
}

/// DESIGN 6: ASCII digits only, and the value fits in u64.
fn query_number(query: &str, name: &str) -> Result<Option<u64>, ()> {
    match query_param(query, name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()).map(Some).ok_or(())
        }
        Some(_) => Err(()),
    }
}

fn reference_request(case: &HttpCase) -> Expected {
    let (path, query) = match case.target.find('?') {
        Some(q) => (&case.target[..q], &case.target[q + 1..]),
        None => (case.target.as_str(), ""),
    };
    if !ROUTES.contains(&path) {
        return Expected::UnknownPath;
    }
    if case.method != "GET" && case.method != "HEAD" {
        return Expected::WrongMethod;
    }
    if path == "/metrics" {
        return Expected::Metrics;
    }
    if !case.ready && path != "/live" && path != "/version" {
        return Expected::NotReady;
    }
    match path {
        "/live" | "/ready" => return Expected::Okay,
        "/version" => return Expected::Version,
        "/hosts" => return Expected::Hosts,
        "/master" => {
            return match query_param(query, "host") {
                None => Expected::Master(None),
                Some(name) => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
                    Some(i) => Expected::Master(Some(i)),
                    None => Expected::UnknownHost,
                },
            }
        }
        "/status" => return Expected::Status(query_param(query, "host")),
        _ => {}
    }
    let Ok(lag_ms) = query_number(query, "lag_ms") else { return Expected::Invalid("Invalid lag_ms") };
    let Ok(lag_bytes) = query_number(query, "lag_bytes") else { return Expected::Invalid("Invalid lag_bytes") };
    let min_lsn = match query_param(query, "min_lsn") {
        None => None,
        Some(v) => match reference_lsn(&v) {
            Some(lsn) => Some(lsn),
            None => return Expected::Invalid("Invalid min_lsn"),
        },
    };
    // `wait_ms` (how long a `min_lsn` request may wait for a replica to catch up) is validated last.
    let Ok(wait_ms) = query_number(query, "wait_ms") else { return Expected::Invalid("Invalid wait_ms") };
    let s = &case.settings;
    let fallback = match query_param(query, "fallback").as_deref() {
        None => s.replica_fallback == ReplicaFallback::Master,
        Some(b"master") => true,
        Some(b"none") => false,
        Some(_) => return Expected::Invalid("Invalid fallback"),
    };
    let list = path == "/replicas";
    let check = match query_param(query, "host") {
        Some(name) if !list => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
            Some(i) => Some(i),
            None => return Expected::UnknownHost,
        },
        _ => None,
    };
    let (time, bytes) = (Some(lag_ms.unwrap_or(s.sync_max_lag_ms)), Some(lag_bytes.unwrap_or(s.sync_max_lag_bytes)));
    let (max_lag_ms, max_lag_bytes) = match path {
        "/replica" | "/replicas" => (lag_ms, lag_bytes),
        "/sync_by_time" => (time, None),
        "/sync_by_bytes" => (None, bytes),
        _ => (time, bytes),
    };
    Expected::Select(Wanted {
        max_lag_ms,
        max_lag_bytes,
        either: path == "/sync_by_time_or_bytes",
        min_lsn,
        most_sync: path == "/most_sync_by_bytes",
        wait_ms: if min_lsn.is_some() { wait_ms.unwrap_or(0).min(s.max_wait_ms) } else { 0 },
        timeline: match min_lsn {
            Some(_) if s.split_brain == SplitBrainPolicy::Timeline => {
                reference_master(case).and_then(|m| case.hosts[m].last.as_ref()).and_then(|o| o.timeline)
            }
            _ => None,
        },
        fallback,
        check,
        list,
    })
}

/// RFC 9110's qvalue in thousandths: `0[.ddd]` or `1[.000]`; `None` when malformed.
fn qvalue(q: &[u8]) -> Option<u32> {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &q[q.len()..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac.iter().chain(b"000").take(3).fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn ows_trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// DESIGN 7: JSON when the Accept header lists `application/json` (any case, any parameters, among other
/// types) with a quality above 0. `None` when the header is too malformed for the design to decide: a
/// malformed or repeated `q`, quoted strings, or line breaks and other unusual white space.
fn reference_json(accept: Option<&[u8]>) -> Option<bool> {
    let Some(accept) = accept else { return Some(false) };
    if accept.iter().any(|b| matches!(b, b'"' | b'\r' | b'\n' | 0x0B | 0x0C)) {
        return None;
    }
    let mut unsure = false;
    for range in accept.split(|&b| b == b',') {
        let mut parts = range.split(|&b| b == b';');
        if !ows_trim(parts.next().unwrap_or_default()).eq_ignore_ascii_case(b"application/json") {
            continue;
        }
        let qs: Vec<&[u8]> = parts
            .filter_map(|p| {
                let p = ows_trim(p);
                let eq = p.iter().position(|&b| b == b'=')?;
                ows_trim(&p[..eq]).eq_ignore_ascii_case(b"q").then(|| ows_trim(&p[eq + 1..]))
            })
            .collect();
        match qs.as_slice() {
            [] => return Some(true),
            [q] => match qvalue(q) {
                Some(0) => {}
                Some(_) => return Some(true),
                None => unsure = true,
            },
            _ => unsure = true,
        }
    }
    if unsure {
        None
    } else {
        Some(false)
    }
}

// ---------------------------------------------------------------------------------------------------------
// http_request: checking answers

/// Checks what every answer must be: a known content type exactly when there is a body, JSON that parses,
/// UTF-8 text, and an `Allow` header exactly on 405. Returns the parsed JSON body.
fn check_any_response(response: &Response) -> Option<Value> {
    let body = response.body.as_bytes();
    assert!(matches!(response.status, 200 | 400 | 404 | 405 | 503), "status {}", response.status);
    assert_eq!(response.allow.is_some(), response.status == 405, "Allow header on {}", response.status);
    assert_eq!(response.content_type.is_none(), body.is_empty(), "a content type exactly with a body");
    match response.content_type.unwrap_or(http::TEXT) {
        http::JSON => Some(
            serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("a JSON body does not parse ({e}): {:?}", String::from_utf8_lossy(body))),
        ),
        http::TEXT => {
            assert!(std::str::from_utf8(body).is_ok(), "a text body is not UTF-8");
            None
        }
        other => panic!("content type {other:?}"),
    }
}

/// The host an answer names, or `None` for its "no host" form (DESIGN 7), after checking its shape: in
/// JSON `{"host", "dc", "geo"}` with the named host's locality, or all three null.
fn answered_host(
    hosts: &[CaseHost],
    response: &Response,
    json_body: Option<Value>,
    json: Option<bool>,
) -> Option<String> {
    if let Some(json) = json {
        assert_eq!(json_body.is_some(), json, "content type {:?} when JSON is {json}", response.content_type);
    }
    let host = match json_body {
        Some(Value::Object(map)) if map.len() == 4 => match map.get("host") {
            Some(Value::String(name)) => {
                let i = hosts.iter().position(|h| h.name == *name).unwrap_or_else(|| panic!("unknown host {name}"));
                let host = &hosts[i];
                let place = [("dc", host.dc), ("geo", host.geo)];
                for (key, value) in place {
                    assert_eq!(map.get(key), Some(&Value::from(value)), "{key} of {name}: {map:?}");
                }
                assert_eq!(map.get("port"), Some(&Value::from(case_port(i))), "port of {name}: {map:?}");
                Some(name.clone())
            }
            Some(Value::Null) => {
                let nulls = ["dc", "geo", "port"].iter().all(|k| map.get(*k) == Some(&Value::Null));
                assert!(nulls, "{map:?}");
                None
            }
            _ => panic!("not a host answer: {map:?}"),
        },
        Some(other) => panic!("not a host answer: {other}"),
        None => {
            let text = std::str::from_utf8(response.body.as_bytes()).unwrap_or_default();
            (!text.is_empty()).then(|| text.to_owned())
        }
    };
    let want = if host.is_some() { 200 } else { 404 };
    assert_eq!(response.status, want, "status of an answer naming {host:?}");
    host
}

fn error_text(body: &Option<Value>) -> &str {
    body.as_ref().and_then(|b| b.get("error_text")).and_then(Value::as_str).expect("an error without error_text")
}

/// Checks one host of `/hosts` (with its name) or `/status` (without); `port` is the one it is polled on.
fn check_host_document(document: &Value, host: &CaseHost, port: u16, view: &View, with_name: bool) {
    let map = document.as_object().unwrap_or_else(|| panic!("a host document is not an object: {document}"));
    let lsn = view.lsn.map(|l| Value::from(l.to_string()));
    let expected = [
        ("host", with_name.then(|| Value::from(host.name.as_str()))),
        ("dc", Some(Value::from(host.dc))),
        ("geo", Some(Value::from(host.geo))),
        ("port", Some(Value::from(port))),
        ("master", Some(Value::from(view.role == Some(Role::Master)))),
        ("alive", Some(Value::from(view.role.is_some()))),
        ("possible_dead", Some(Value::from(host.health == Health::PossiblyDead))),
        ("lag_ms", Some(Value::from(view.lag_ms))),
        ("sync_by_time", Some(Value::from(view.sync_by_time))),
        ("lag_bytes", Some(Value::from(view.lag_bytes))),
        ("sync_by_bytes", Some(Value::from(view.sync_by_bytes))),
        ("lsn", Some(lsn.unwrap_or(Value::Null))),
        ("timeline", Some(Value::from(view.timeline))),
    ];
    let expected: Vec<(&str, Value)> = expected.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    assert_eq!(map.len(), expected.len(), "fields of {}: {document}", host.name);
    for (key, value) in &expected {
        assert_eq!(map.get(*key), Some(value), "{key} of {}: {document}", host.name);
    }
    if let Some(Value::String(lsn)) = map.get("lsn") {
        assert_eq!(&canonical_lsn(lsn.as_bytes()), lsn, "lsn of {} is not canonical", host.name);
    }
}

/// A replica answer in the round robin: the host handed out and the set it was chosen from.
struct RoundRobin {
    host: usize,
    from: Vec<usize>,
}

/// Checks a per-host check's answer: 200 naming host `i` exactly when it `passes` (alive, not possibly dead, a
/// replica admitted by the filters), else 503 with an `error_text` that starts with its name; no cursor move.
fn check_per_host(
    case: &HttpCase,
    i: usize,
    passes: bool,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) {
    assert_eq!(cursor.0, cursor.1, "a per-host check moved the cursor");
    let body = check_any_response(response);
    let name = &case.hosts[i].name;
    if passes {
        let named = answered_host(&case.hosts, response, body, json);
        assert_eq!(named.as_deref(), Some(name.as_str()), "a passing per-host check names its host");
    } else {
        assert_eq!(response.status, 503, "a failing per-host check of {name:?}");
        assert!(error_text(&body).starts_with(name.as_str()), "{body:?}");
    }
}

/// Checks a `/replicas` answer: every candidate exactly once, healthy before possibly dead, then by locality
/// (this DC, this region, the rest), each group in host order from the cursor on; the cursor moves past the
/// first entry, and stays without one.
fn check_list(
    case: &HttpCase,
    views: &[View],
    wanted: &Wanted,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) {
    let (before, after) = cursor;
    let body = check_any_response(response);
    assert_eq!(response.status, 200, "/replicas");
    let names: Vec<String> = match body {
        Some(Value::Array(items)) => {
            assert_ne!(json, Some(false), "/replicas in JSON without asking");
            items
                .iter()
                .map(|item| {
                    let one = Response {
                        status: 200,
                        content_type: Some(http::JSON),
                        body: http::Body::Owned(item.to_string()),
                        allow: None,
                    };
                    answered_host(&case.hosts, &one, Some(item.clone()), Some(true)).expect("a listed host is named")
                })
                .collect()
        }
        Some(other) => panic!("/replicas is not an array: {other}"),
        None => {
            assert_ne!(json, Some(true), "/replicas in text when JSON was asked for");
            let text = std::str::from_utf8(response.body.as_bytes()).unwrap_or_default();
            assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
            text.lines().map(str::to_owned).collect()
        }
    };
    let got: Vec<usize> = names
        .iter()
        .map(|name| case.hosts.iter().position(|h| h.name == *name).unwrap_or_else(|| panic!("{name:?}")))
        .collect();
    let n = case.hosts.len();
    let s = &case.settings;
    let tier = |j: usize| {
        let h = &case.hosts[j];
        if s.locality_dc && case.current_dc.is_some() && h.dc == case.current_dc {
            0
        } else if s.locality_geo && case.current_geo.is_some() && h.geo == case.current_geo {
            1
        } else {
            2
        }
    };
    let start = if n == 0 { 0 } else { before % (n + 1) % n };
    let mut expected: Vec<usize> = (0..n)
        .filter(|&j| matches!(case.hosts[j].health, Health::Alive | Health::PossiblyDead) && wanted.admits(&views[j]))
        .collect();
    expected.sort_by_key(|&j| (case.hosts[j].health != Health::Alive, tier(j), (j + n - start) % n));
    assert_eq!(got, expected, "/replicas from cursor {before}");
    assert_eq!(after, expected.first().map_or(before, |&j| j + 1), "the cursor after /replicas");
}

/// Checks a selection answer (DESIGN 5) and the cursor's move; returns the round-robin choice, if any.
fn check_selection(
    case: &HttpCase,
    views: &[View],
    master: Option<usize>,
    wanted: &Wanted,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) -> Option<RoundRobin> {
    let (before, after) = cursor;
    let body = check_any_response(response);
    let named = answered_host(&case.hosts, response, body, json);
    let n = case.hosts.len();
    let matching = |health: Health| -> Vec<usize> {
        (0..n).filter(|&i| case.hosts[i].health == health && wanted.admits(&views[i])).collect()
    };
    // Healthy replicas before possibly dead ones; dead and unseen hosts are never candidates.
    let candidates = [Health::Alive, Health::PossiblyDead].iter().map(|&h| matching(h)).find(|c| !c.is_empty());
    let Some(name) = named else {
        assert_eq!(candidates, None, "404 although these replicas match");
        if wanted.fallback {
            assert_eq!(master, None, "404 although there is a master");
        }
        assert_eq!(after, before, "the cursor moved without a round-robin answer");
        return None;
    };
    let i = case.hosts.iter().position(|h| h.name == name).unwrap_or_else(|| panic!("{name:?} is not a host"));
    let host = &case.hosts[i];
    assert!(
        matches!(host.health, Health::Alive | Health::PossiblyDead) && host.last.is_some(),
        "{name:?} is {:?} (seen: {})",
        host.health,
        host.last.is_some()
    );
    let Some(candidates) = candidates else {
        assert!(wanted.fallback, "{name:?} handed out with fallback=none, but no replica matches");
        assert_eq!(Some(i), master, "{name:?} handed out, but no replica matches and it is not the master");
        assert_eq!(after, before, "the cursor moved on a master answer");
        return None;
    };
    assert!(candidates.contains(&i), "{name:?} handed out, but the matching replicas are {candidates:?}");
    if wanted.most_sync {
        let best = candidates.iter().copied().min_by_key(|&j| (views[j].lag_bytes, j));
        assert_eq!(Some(i), best, "not the most synchronous replica");
        assert_eq!(after, before, "the cursor moved on /most_sync_by_bytes");
        return None;
    }
    // Locality narrows the round robin to the closest non-empty group: same DC, same region, all.
    let s = &case.settings;
    let in_dc = |j: &usize| s.locality_dc && case.current_dc.is_some() && case.hosts[*j].dc == case.current_dc;
    let in_geo = |j: &usize| s.locality_geo && case.current_geo.is_some() && case.hosts[*j].geo == case.current_geo;
    let local: Vec<usize> = [
        candidates.iter().copied().filter(in_dc).collect::<Vec<_>>(),
        candidates.iter().copied().filter(in_geo).collect(),
    ]
    .into_iter()
    .find(|group| !group.is_empty())
    .unwrap_or(candidates);
    assert!(local.contains(&i), "{name:?} handed out, but the closest matching replicas are {local:?}");
    // The next candidate after the last host handed out (cursor = its index + 1; 0 before the first).
    if before <= n {
        let start = before % n;
        let next = local.iter().copied().min_by_key(|&j| (j + n - start) % n);
        assert_eq!(Some(i), next, "round robin from cursor {before} among {local:?}");
    }
    assert_eq!(after, i + 1, "the cursor after handing out host {i}");
    Some(RoundRobin { host: i, from: local })
}

/// Target `http_request`. Input: a request and a snapshot, see [`decode_http`].
///
/// Checks: the snapshot derived from the hosts elects the master of DESIGN 4 and shows the lag and flags
/// of DESIGN 1 and 3 (with observation times, a replica's time lag is bounded by the master's WAL
/// history), and [`Snapshot::update`] after one host changed gives the same snapshot; [`http::handle`] never panics and answers each route as DESIGN 0 and 5-7 say (status,
/// content type, body; every JSON body parses); a selection route hands out only an alive replica that
/// satisfies the request's filters as read from the query, healthy before possibly dead, the closest by
/// locality, in round-robin order or the most synchronous, and otherwise the elected master or 404; a
/// round robin repeated over a stable set hands out each member floor(k/m) or ceil(k/m) times;
/// [`http::prepare`] agrees with [`http::handle`].
pub fn check_http_request(data: &[u8]) {
    let case = decode_http(data);
    let ids: Vec<Arc<HostName>> = case
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Arc::new(HostName::new(HostSpec {
                name: &h.name,
                port: case_port(i),
                dc: h.dc,
                geo: h.geo,
                current_dc: case.current_dc,
                current_geo: case.current_geo,
            }))
        })
        .collect();
    let inputs: Vec<HostInput<'_>> =
        case.hosts.iter().zip(&ids).map(|(h, id)| HostInput { id, health: h.health, last: h.last.as_ref() }).collect();
    let start = Instant::now();
    let instant = |ms: u64| start + Duration::from_millis(ms);
    let histories: Vec<Vec<(Instant, Lsn)>> =
        case.hosts.iter().map(|h| h.wal_history.iter().map(|&(at, lsn)| (instant(at), lsn)).collect()).collect();
    let times: Vec<HostTimes<'_>> = match case.timed {
        true => case
            .hosts
            .iter()
            .zip(&histories)
            .map(|(h, history)| HostTimes { observed_at: h.observed_at.map(instant), wal_history: history })
            .collect(),
        false => Vec::new(),
    };
    let snapshot = match case.timed {
        true => Snapshot::derive_timed(case.ready, &inputs, &times, case.settings),
        false => Snapshot::derive(case.ready, &inputs, case.settings),
    };

    // An incremental update after one host changed equals a full derivation: each host in turn starts from
    // "not polled yet" in a not-ready snapshot whose /hosts document was already rendered.
    for changed in 0..inputs.len() {
        let mut earlier = inputs.clone();
        earlier[changed] = HostInput { id: &ids[changed], health: Health::Unknown, last: None };
        let mut updated = Snapshot::derive_timed(false, &earlier, &times, case.settings);
        let _ = updated.hosts_json();
        updated.update(case.ready, &inputs, &times, changed);
        assert_eq!(updated, snapshot, "Snapshot::update after host {changed} changed");
        assert_eq!(updated.hosts_json(), snapshot.hosts_json(), "/hosts after updating host {changed}");
    }

    let master = reference_master(&case);
    assert_eq!(snapshot.master, master, "elected master");
    let views = reference_views(&case, master);
    assert_eq!(snapshot.hosts.len(), views.len());
    for ((status, view), host) in snapshot.hosts.iter().zip(&views).zip(&case.hosts) {
        let shown = View {
            role: status.role,
            lag_ms: status.lag_ms,
            lag_bytes: status.lag_bytes,
            lsn: status.lsn,
            sync_by_time: status.sync_by_time,
            sync_by_bytes: status.sync_by_bytes,
            timeline: status.timeline,
        };
        assert_eq!(&shown, view, "{:?} in the snapshot", host.name);
        assert_eq!(status.alive(), view.role.is_some());
        assert_eq!(status.health, host.health);
        assert_eq!(&*status.id.name, host.name.as_str());
        assert_eq!(status.id.local_dc, case.current_dc.is_some() && host.dc == case.current_dc);
        assert_eq!(status.id.local_geo, case.current_geo.is_some() && host.geo == case.current_geo);
    }

    let accept = case.accept.as_deref();
    let json = reference_json(accept);
    if let (Some(json), Some(accept)) = (json, accept) {
        assert_eq!(http::accepts_json(accept), json, "JSON for Accept: {:?}", String::from_utf8_lossy(accept));
    }
    let expected = reference_request(&case);
    let mut cursor = case.cursor;
    let prepared = http::prepare(&snapshot, &case.method, &case.target, accept);
    let response = http::handle(&snapshot, &mut cursor, &case.method, &case.target, accept);
    let after = cursor;

    if matches!(expected, Expected::Metrics) {
        assert_eq!(prepared, Prepared::Metrics, "/metrics");
        assert_eq!(after, case.cursor, "the cursor moved on /metrics");
        assert_eq!((response.status, response.content_type), (200, Some(metrics::CONTENT_TYPE)), "/metrics");
        let ready = format!("pg_status_ready {}", u8::from(case.ready));
        let text = String::from_utf8_lossy(response.body.as_bytes());
        assert!(text.lines().any(|l| l == ready), "/metrics without {ready:?}:\n{text}");
        return;
    }
    let Expected::Select(wanted) = expected else {
        assert_eq!(after, case.cursor, "the cursor moved on {expected:?}");
        assert_eq!(prepared, Prepared::Respond(response.clone()), "prepare and handle disagree");
        check_plain_route(&case, &views, master, &expected, &response, json);
        return;
    };
    let Prepared::Select(selection) = prepared else {
        panic!("{expected:?} was answered at once: {prepared:?}");
    };
    assert_eq!(selection.wait_ms, wanted.wait_ms, "wait_ms");
    let any_candidate = (0..views.len())
        .any(|i| matches!(case.hosts[i].health, Health::Alive | Health::PossiblyDead) && wanted.admits(&views[i]));
    let satisfied = match wanted.check {
        Some(i) => case.hosts[i].health == Health::Alive && wanted.admits(&views[i]),
        None => any_candidate,
    };
    assert_eq!(selection.satisfied(&snapshot), satisfied, "Selection::satisfied");
    if let Some(i) = wanted.check {
        check_per_host(&case, i, satisfied, &response, json, (case.cursor, after));
        return;
    }
    if wanted.list {
        check_list(&case, &views, &wanted, &response, json, (case.cursor, after));
        return;
    }

    let Some(first) = check_selection(&case, &views, master, &wanted, &response, json, (case.cursor, after)) else {
        return;
    };
    // The same request again, 2m + 1 times over the same m candidates: each twice or three times.
    let m = first.from.len();
    let mut counts = vec![0usize; views.len()];
    let mut before = after;
    for _ in 0..2 * m + 1 {
        let response = http::handle(&snapshot, &mut cursor, &case.method, &case.target, accept);
        let after = cursor;
        let chosen = check_selection(&case, &views, master, &wanted, &response, json, (before, after))
            .expect("a repeated round robin stopped handing out replicas");
        assert_eq!(chosen.from, first.from, "the candidates changed in a stable snapshot");
        counts[chosen.host] += 1;
        before = after;
    }
    for &j in &first.from {
        assert!(
            matches!(counts[j], 2 | 3),
            "round robin over {:?} (first {}): counts {counts:?}",
            first.from,
            first.host
        );
    }
}

/// Checks the answer of a route that chooses no replica.
fn check_plain_route(
    case: &HttpCase,
    views: &[View],
    master: Option<usize>,
    expected: &Expected,
    response: &Response,
    json: Option<bool>,
) {
    let body = check_any_response(response);
    let status = response.status;
    match expected {
        Expected::UnknownPath | Expected::WrongMethod => {
            let want = if matches!(expected, Expected::UnknownPath) { 404 } else { 405 };
            assert_eq!(status, want, "{expected:?}");
            assert!(response.body.as_bytes().is_empty(), "{expected:?} with a body");
            if status == 405 {
                assert_eq!(response.allow, Some("GET, HEAD"));
            }
        }
        Expected::NotReady => {
            assert_eq!(status, 503, "before readiness");
            assert_eq!(error_text(&body), "pg_monitor is not ready");
        }
        Expected::Okay => {
            assert_eq!((status, response.body.as_bytes()), (200, &b"OK"[..]));
        }
        Expected::Version => {
            assert_eq!(status, 200, "/version");
            match &body {
                Some(document) => assert_eq!(document, &Value::from_iter([("version", http::VERSION)])),
                None => assert_eq!(response.body.as_bytes(), http::VERSION.as_bytes()),
            }
            if let Some(json) = json {
                assert_eq!(body.is_some(), json, "/version format");
            }
        }
        Expected::Hosts => {
            assert_eq!(status, 200, "/hosts");
            let list = body.as_ref().and_then(Value::as_array).expect("/hosts is not a JSON array");
            assert_eq!(list.len(), case.hosts.len(), "/hosts length");
            for (i, ((document, host), view)) in list.iter().zip(&case.hosts).zip(views).enumerate() {
                check_host_document(document, host, case_port(i), view, true);
            }
        }
        Expected::Master(checked) => {
            let refused = refused_claimants(case);
            if !refused.is_empty() {
                let names: Vec<&str> = refused.iter().map(|&i| case.hosts[i].name.as_str()).collect();
                assert_eq!(status, 503, "/master in a refused split brain");
                assert_eq!(error_text(&body), format!("split brain: {}", names.join(", ")));
                return;
            }
            match checked {
                Some(i) if master != Some(*i) => {
                    assert_eq!(status, 503, "/master?host= of a host that is not the master");
                    assert_eq!(error_text(&body), format!("{} is not the master", case.hosts[*i].name));
                }
                _ => {
                    let named = answered_host(&case.hosts, response, body, json);
                    assert_eq!(named.as_deref(), master.map(|m| case.hosts[m].name.as_str()), "/master");
                }
            }
        }
        Expected::UnknownHost => {
            assert_eq!((status, response.body.as_bytes()), (404, &b""[..]), "host= naming an unknown host");
        }
        Expected::Status(None) => {
            assert_eq!(status, 400, "/status without host");
            error_text(&body);
        }
        Expected::Status(Some(name)) => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
            Some(i) => {
                assert_eq!(status, 200, "/status of a host");
                let document = body.expect("/status answers JSON");
                check_host_document(&document, &case.hosts[i], case_port(i), &views[i], false);
            }
            None => assert_eq!((status, response.body.as_bytes()), (404, &b""[..]), "/status of an unknown host"),
        },
        Expected::Invalid(text) => {
            assert_eq!(status, 400, "{text}");
            assert_eq!(body, Some(Value::from_iter([("error_text", *text)])), "error body");
        }
        Expected::Select(_) | Expected::Metrics => unreachable!("checked before the plain routes"),
    }
}
