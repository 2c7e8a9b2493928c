//! `pg-status-bench`: measures pg-status side by side with nginx and prints one Markdown report.
//!
//! Sections (all by default):
//! - `http`: requests/s and latency percentiles of pg-status and of nginx (`return 200 "127.0.0.1"`, one
//!   worker), each pinned to one core with the load generator on the other, against a real 3-node cluster;
//! - `footprint`: resident memory and threads idle, under load and with 2,000 idle keep-alive connections;
//! - `polling`: CPU and memory of pg-status polling 10, 100 and 1,000 fake PostgreSQL servers every second;
//! - `failover`: time from a promotion to `/master` switching and from a host's crash or hang to `dead`.
//!
//! Run it through `bench/run.sh`, which installs the tools and builds the release binary.

mod episodes;
mod error;
mod failover;
mod fakepg;
mod footprint;
mod http;
mod polling;
mod procfs;
mod report;
mod tools;
mod unixload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pg_status_tests::{Cluster, ClusterOptions, PgBinaries, PgStatus, PgStatusBuilder};

use crate::error::{Error, Result};
use crate::report::{progress, Report};

const USAGE: &str = "usage: pg-status-bench [--quick] [--pg-status PATH] [--only SECTIONS] [--duration SECS]
                       [--rounds N] [--connections N] [--poll-window SECS] [--hosts N,N,...]
                       [--failover-rounds N] [--out FILE]
  --quick             short validation run: 3 s per load point, 1 round, 5 s polling windows, 1 failover round
  --pg-status PATH    the pg-status binary (default: $PG_STATUS_BIN, else target/release/pg-status)
  --only SECTIONS     comma-separated subset of http,footprint,polling,failover
  --duration SECS     length of each HTTP load point (default 10)
  --rounds N          measurements of each HTTP point per server; the median is reported (default 3)
  --connections N     keep-alive connections of wrk and oha (default 128)
  --poll-window SECS  CPU measurement window of each polling point (default 20)
  --hosts LIST        host counts of the polling section (default 10,100,1000)
  --failover-rounds N fresh clusters for the failover section (default 3)
  --out FILE          also write the report to FILE
or: pg-status-bench fake-servers N SECS        (N fake PostgreSQL servers; prints pg_status__hosts)
or: pg-status-bench idle-clients ADDR N SECS   (N idle keep-alive connections to ADDR)";

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pg-status binary.
    pub binary: PathBuf,
    /// Sections to run.
    pub sections: Vec<String>,
    /// Length of each HTTP load point.
    pub duration: Duration,
    /// Measurements per HTTP point and server.
    pub rounds: usize,
    /// Load-generator connections.
    pub connections: u32,
    /// CPU measurement window per polling point.
    pub poll_window: Duration,
    /// Host counts of the polling section.
    pub host_counts: Vec<usize>,
    /// Failover rounds (a fresh cluster each).
    pub failover_rounds: usize,
    /// Where to write the report as well.
    pub out: Option<PathBuf>,
    /// Whether this is a short validation run.
    pub quick: bool,
}

/// The core pg-status and nginx run on.
pub const SERVER_CORE: usize = 0;
/// The core the load generators (and the fake PostgreSQL servers) run on.
pub const LOAD_CORE: usize = 1;

/// Polling interval and deadline of every pg-status started here (`sleep_ms`, `query_timeout_ms`).
pub const SLEEP_MS: u64 = 1000;
/// See [`SLEEP_MS`].
pub const QUERY_TIMEOUT_MS: u64 = 1000;
/// Consecutive failures after which a host is dead.
pub const MAX_FAILS: u32 = 3;

fn parse_args() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        binary: std::env::var_os(pg_status_tests::runner::BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/pg-status")),
        sections: ["http", "footprint", "polling", "failover"].map(String::from).to_vec(),
        duration: Duration::from_secs(10),
        rounds: 3,
        connections: 128,
        poll_window: Duration::from_secs(20),
        host_counts: vec![10, 100, 1000],
        failover_rounds: 3,
        out: None,
        quick: false,
    };
    let mut explicit: Vec<String> = Vec::new();
    let number = |name: &str, value: Option<String>| -> Result<u64> {
        value
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Usage(format!("{name} needs a whole number\n{USAGE}")))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--pg-status" => o.binary = args.next().ok_or_else(|| Error::Usage(USAGE.into()))?.into(),
            "--only" => {
                let list = args.next().ok_or_else(|| Error::Usage(USAGE.into()))?;
                o.sections = list.split(',').map(|s| s.trim().to_owned()).collect();
                for s in &o.sections {
                    if !["http", "footprint", "polling", "failover"].contains(&s.as_str()) {
                        return Err(Error::Usage(format!("unknown section {s:?}\n{USAGE}")));
                    }
                }
            }
            "--duration" => o.duration = Duration::from_secs(number(&arg, args.next())?.max(1)),
            "--rounds" => o.rounds = number(&arg, args.next())?.clamp(1, 20) as usize,
            "--connections" => o.connections = number(&arg, args.next())?.clamp(1, 10_000) as u32,
            "--poll-window" => o.poll_window = Duration::from_secs(number(&arg, args.next())?.clamp(1, 600)),
            "--hosts" => {
                let list = args.next().ok_or_else(|| Error::Usage(USAGE.into()))?;
                o.host_counts = list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().ok().filter(|&n| (1..=10_000).contains(&n)))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::Usage(format!("--hosts: counts between 1 and 10,000\n{USAGE}")))?;
            }
            "--failover-rounds" => o.failover_rounds = number(&arg, args.next())?.clamp(1, 20) as usize,
            "--out" => o.out = Some(args.next().ok_or_else(|| Error::Usage(USAGE.into()))?.into()),
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            other => return Err(Error::Usage(format!("unknown argument {other:?}\n{USAGE}"))),
        }
        explicit.push(arg);
    }
    if o.quick {
        // Explicit values win over --quick's defaults.
        let given = |name: &str| explicit.iter().any(|a| a == name);
        if !given("--duration") {
            o.duration = Duration::from_secs(3);
        }
        if !given("--rounds") {
            o.rounds = 1;
        }
        if !given("--poll-window") {
            o.poll_window = Duration::from_secs(5);
        }
        if !given("--failover-rounds") {
            o.failover_rounds = 1;
        }
    }
    Ok(o)
}

/// What every section needs: the options and a pinned launcher for pg-status.
pub struct Ctx {
    /// The options.
    pub options: Options,
    /// A script that runs the pg-status binary pinned to [`SERVER_CORE`] (`exec taskset -c 0 BINARY`), so the
    /// process keeps the script's pid and the harness's runner can start it like the binary itself.
    pub pinned_binary: PathBuf,
    /// PostgreSQL's programs.
    pub pg: PgBinaries,
    _dir: tempfile::TempDir,
}

impl Ctx {
    fn new(options: Options) -> Result<Ctx> {
        let binary = std::fs::canonicalize(&options.binary).map_err(|e| {
            Error::io(
                format!(
                    "the pg-status binary {} (build it with cargo build --release -p pg-status)",
                    options.binary.display()
                ),
                e,
            )
        })?;
        tools::require("taskset")?;
        let pg = PgBinaries::locate()?;
        let dir = tempfile::Builder::new()
            .prefix("pg-status-bench-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let pinned_binary = dir.path().join("pg-status-pinned");
        let script = format!("#!/bin/sh\nexec taskset -c {SERVER_CORE} '{}'\n", binary.display());
        std::fs::write(&pinned_binary, script).map_err(|e| Error::io("writing the pinned launcher", e))?;
        set_executable(&pinned_binary)?;
        Ok(Ctx { options: Options { binary, ..options }, pinned_binary, pg, _dir: dir })
    }

    /// A pg-status builder for the pinned binary with the benchmark's polling settings.
    pub fn pg_status(&self) -> Result<PgStatusBuilder> {
        Ok(PgStatusBuilder::new(&self.pinned_binary)?
            .timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS)
            .env("pg_status__log_level", "info"))
    }

    /// Starts pg-status for `hosts` and waits until it is ready.
    pub fn start_pg_status(&self, hosts: &[(String, u16)], ready_within: Duration) -> Result<PgStatus> {
        let process = self.pg_status()?.hosts(hosts).spawn()?;
        process.wait_ready(ready_within)?;
        Ok(process)
    }

    /// Starts a primary with `replicas` streaming replicas.
    pub fn start_cluster(&self, replicas: usize) -> Result<Cluster> {
        progress(format!("starting a PostgreSQL primary and {replicas} replicas"));
        Ok(Cluster::start(&self.pg, ClusterOptions::with_replicas(replicas))?)
    }

    /// Whether a section was asked for.
    pub fn wants(&self, section: &str) -> bool {
        self.options.sections.iter().any(|s| s == section)
    }
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// The cluster's hosts as pg-status is told them.
pub fn cluster_hosts(cluster: &Cluster) -> Vec<(String, u16)> {
    cluster.nodes().iter().map(|n| (n.host(), n.port())).collect()
}

fn machine(report: &mut Report) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    report.line(format!(
        "Machine: {cores} cores ({cpu}), Linux {}, load average at start {}",
        kernel.trim(),
        load_average()
    ));
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(options: Options) -> Result<Report> {
    let mut report = Report::default();
    let ctx = Ctx::new(options)?;
    let o = &ctx.options;
    report.line("# pg-status benchmark");
    report.line("");
    report.line(format!(
        "Command: `{}`",
        std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" ")
    ));
    machine(&mut report);
    report.line(format!(
        "pg-status and nginx pinned to core {SERVER_CORE}, load generators and fake servers to core {LOAD_CORE}; \
         {} s per HTTP point, {} round(s) (median), {} connections; polling windows of {} s; \
         sleep_ms={SLEEP_MS}, query_timeout_ms={QUERY_TIMEOUT_MS}, max_fails={MAX_FAILS}.",
        o.duration.as_secs(),
        o.rounds,
        o.connections,
        o.poll_window.as_secs()
    ));
    report.line("");

    let mut summary = Vec::new();
    if ctx.wants("http") || ctx.wants("footprint") {
        let cluster = ctx.start_cluster(2)?;
        if ctx.wants("footprint") {
            summary.extend(footprint::run(&ctx, &cluster, &mut report)?);
        }
        if ctx.wants("http") {
            summary.extend(http::run(&ctx, &cluster, &mut report)?);
        }
    }
    if ctx.wants("polling") {
        summary.extend(polling::run(&ctx, &mut report)?);
    }
    if ctx.wants("failover") {
        summary.extend(failover::run(&ctx, &mut report)?);
        summary.extend(episodes::run(&ctx, &mut report)?);
    }

    report.line("## Targets");
    report.line("");
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|t: &Target| vec![t.name.clone(), t.measured.clone(), report::verdict(t.met).to_owned()])
        .collect();
    report.table(&["target", "measured", "verdict"], &rows);
    report.line(format!("Load average at the end: {}", load_average()));
    Ok(report)
}

/// One target of the issue and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target as stated.
    pub name: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

impl Target {
    /// A target line.
    pub fn new(name: impl Into<String>, measured: impl Into<String>, met: bool) -> Target {
        Target { name: name.into(), measured: measured.into(), met }
    }
}

/// A helper command: its arguments in, success or the error to print out.
type Tool = fn(&[String]) -> Result<()>;

/// `pg-status-bench fake-servers N SECS`: starts N fake PostgreSQL servers on core [`LOAD_CORE`], prints the
/// matching `pg_status__hosts` value, and serves for SECS seconds (for profiling pg-status by hand).
fn fake_servers(args: &[String]) -> Result<()> {
    let usage = || Error::Usage("usage: pg-status-bench fake-servers N SECS".into());
    let [n, secs] = args else { return Err(usage()) };
    let n: usize = n.parse().map_err(|_| usage())?;
    let secs: u64 = secs.parse().map_err(|_| usage())?;
    pg_status_tests::net::raise_nofile_limit(4 * n as u64 + 1024)?;
    let fleet = fakepg::Fleet::start(n, LOAD_CORE)?;
    let hosts: Vec<String> = fleet.addrs().iter().map(ToString::to_string).collect();
    println!("{}", hosts.join(","));
    std::thread::sleep(Duration::from_secs(secs.min(3600)));
    Ok(())
}

/// `pg-status-bench idle-clients ADDR N SECS`: opens N keep-alive connections to ADDR, one request each, and
/// holds them idle for SECS seconds (for profiling pg-status's memory by hand).
fn idle_clients(args: &[String]) -> Result<()> {
    let usage = || Error::Usage("usage: pg-status-bench idle-clients ADDR N SECS".into());
    let [addr, n, secs] = args else { return Err(usage()) };
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| usage())?;
    if !addr.ip().is_loopback() {
        return Err(Error::Usage(format!("{addr}: only loopback addresses are loaded")));
    }
    let n: usize = n.parse().map_err(|_| usage())?;
    let secs: u64 = secs.parse().map_err(|_| usage())?;
    pg_status_tests::net::raise_nofile_limit(n as u64 + 1024)?;
    let streams = footprint::open_idle(addr, n)?;
    println!("{} idle connections open", streams.len());
    std::thread::sleep(Duration::from_secs(secs.min(3600)));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tool: Option<Tool> = match args.first().map(String::as_str) {
        Some("fake-servers") => Some(fake_servers),
        Some("idle-clients") => Some(idle_clients),
        _ => None,
    };
    if let Some(tool) = tool {
        if let Err(e) = tool(&args[1..]) {
            eprintln!("{e}");
            std::process::exit(2);
        }
        return;
    }
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let out = options.out.clone();
    match run(options) {
        Ok(report) => {
            if let Some(path) = out {
                if let Err(e) = std::fs::write(&path, report.text()) {
                    eprintln!("cannot write {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
