//! HTTP throughput and latency of pg-status next to nginx, each on one pinned core, with the load generator on
//! the other core.

use std::net::SocketAddr;
use std::path::PathBuf;

use pg_status_tests::Cluster;

use crate::error::{Error, Result};
use crate::procfs::{self, Sampler};
use crate::report::{self, mib, ms, progress, rate, Report};
use crate::tools::{self, LoadResult, Nginx, Oha, Wrk};
use crate::unixload;
use crate::{cluster_hosts, Ctx, Target, LOAD_CORE, SERVER_CORE};

/// The application mix as a wrk script (its argument is the `min_lsn` to ask for).
const MIX_LUA: &str = include_str!("../lua/mix.lua");

/// Connections (threads) of the Unix socket point's client.
const UNIX_CONNECTIONS: u32 = 32;

/// The offered rate of the fixed-rate point.
const FIXED_RATE: u32 = 20_000;

/// How one load point is generated.
#[derive(Debug, Clone)]
enum Load {
    /// wrk with these headers, optionally a Lua script with arguments.
    Wrk { path: String, headers: Vec<&'static str>, script: Option<Vec<String>> },
    /// oha at a fixed rate with latency correction.
    Oha { path: String },
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Point {
    name: &'static str,
    load: Load,
    /// pg-status / nginx requests-per-second ratio the issue asks for, if any.
    target_ratio: Option<f64>,
}

fn points(lsn: &str) -> Vec<Point> {
    let wrk = |path: &str, headers: Vec<&'static str>| Load::Wrk { path: path.to_owned(), headers, script: None };
    vec![
        Point { name: "/master plain, keep-alive", load: wrk("/master", vec![]), target_ratio: Some(0.8) },
        Point { name: "/replica plain", load: wrk("/replica", vec![]), target_ratio: None },
        Point {
            name: "/replica?min_lsn JSON",
            load: wrk(&format!("/replica?min_lsn={lsn}"), vec!["Accept: application/json"]),
            target_ratio: Some(0.6),
        },
        Point { name: "/hosts (JSON, 3 hosts)", load: wrk("/hosts", vec![]), target_ratio: None },
        Point {
            name: "application mix",
            load: Load::Wrk { path: "/".into(), headers: vec![], script: Some(vec![lsn.to_owned()]) },
            target_ratio: Some(0.6),
        },
        Point {
            name: "/master, new connection per request",
            load: wrk("/master", vec!["Connection: close"]),
            target_ratio: None,
        },
        Point {
            name: "/master at a fixed 20,000 req/s (oha, latency-corrected)",
            load: Load::Oha { path: "/master".into() },
            target_ratio: None,
        },
    ]
}

struct Tools {
    wrk: Wrk,
    oha: Option<Oha>,
    mix_script: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs one load point against the server at `addr` whose answering process is `pid`, and adds the CPU
/// time that process used during the run (robust to a shared machine, unlike requests per second).
fn measure(tools: &Tools, point: &Point, addr: SocketAddr, pid: u32) -> Result<Option<LoadResult>> {
    let before = procfs::cpu_time(pid)?;
    let result = run_load(tools, point, addr)?;
    let used = procfs::cpu_time(pid)?.since(&before);
    Ok(result.map(|r| LoadResult { server_cpu: Some(std::time::Duration::from_nanos(used.sched_ns)), ..r }))
}

fn run_load(tools: &Tools, point: &Point, addr: SocketAddr) -> Result<Option<LoadResult>> {
    match &point.load {
        Load::Wrk { path, headers, script } => {
            let script = script.as_ref().map(|args| (tools.mix_script.as_path(), args.as_slice()));
            tools.wrk.run(addr, path, headers, script).map(Some)
        }
        Load::Oha { path } => match &tools.oha {
            Some(oha) => oha.run(addr, path).map(Some),
            None => Ok(None),
        },
    }
}

/// Checks that every path of the points answers 200 before loading it, so that a load point never measures
/// error answers by mistake.
fn check_paths(addr: SocketAddr, lsn: &str) -> Result<()> {
    let replica = format!("/replica?min_lsn={lsn}&lag_ms=1000&lag_bytes=1000000");
    for path in ["/master", "/replica", &format!("/replica?min_lsn={lsn}"), "/hosts", &replica, "/sync_by_time"]
        .into_iter()
        .chain(["/most_sync_by_bytes", "/sync_by_time_and_bytes"])
    {
        let resp = pg_status_tests::http::get(addr, path, Some("application/json"))?;
        if resp.status != 200 {
            return Err(Error::Unexpected(format!("GET {path} answered {resp}")));
        }
    }
    Ok(())
}

/// Runs the HTTP section against a fresh pg-status watching `cluster`; returns the targets it measured.
pub fn run(ctx: &Ctx, cluster: &Cluster, report: &mut Report) -> Result<Vec<Target>> {
    let o = &ctx.options;
    let dir = tempfile::Builder::new()
        .prefix("pg-status-bench-lua-")
        .tempdir()
        .map_err(|e| Error::io("creating a directory for wrk scripts", e))?;
    let mix_script = dir.path().join("mix.lua");
    std::fs::write(&mix_script, MIX_LUA).map_err(|e| Error::io("writing mix.lua", e))?;
    let oha = match tools::which("oha") {
        Some(program) => {
            Some(Oha { program, core: LOAD_CORE, connections: o.connections, rate: FIXED_RATE, duration: o.duration })
        }
        None => {
            progress("oha is not installed: the fixed-rate point is skipped");
            None
        }
    };
    let tools = Tools {
        wrk: Wrk { program: tools::require("wrk")?, core: LOAD_CORE, connections: o.connections, duration: o.duration },
        oha,
        mix_script,
        _dir: dir,
    };
    let nginx_program = tools::require("nginx")?;

    // A write the replicas have replayed: every min_lsn request can be answered by a replica.
    let lsn = pg_status_tests::pg::format_lsn(pg_status_tests::pg::write_rows(cluster.primary(), 10)?);
    cluster.wait_caught_up(std::time::Duration::from_secs(30))?;
    // pg-status serves a Unix socket too, for the Unix socket point.
    let pg_socket = tools.mix_script.with_file_name("pg-status.sock");
    let pg = ctx.pg_status()?.hosts(&cluster_hosts(cluster)).env("pg_status__http_unix_socket", pg_socket.display());
    let pg = pg.spawn()?;
    pg.wait_ready(std::time::Duration::from_secs(30))?;
    // The replicas' replay of `lsn` must have been polled before /replica?min_lsn answers a replica.
    std::thread::sleep(std::time::Duration::from_millis(crate::SLEEP_MS + 500));
    check_paths(pg.addr(), &lsn)?;
    let nginx = Nginx::start(&nginx_program, SERVER_CORE)?;
    let nginx_worker =
        nginx.worker_pid().ok_or_else(|| Error::Unexpected("nginx's worker process was not found".into()))?;

    // Warm both servers up (connections, allocator) before measuring.
    let warm = Wrk { duration: std::time::Duration::from_secs(1), ..tools.wrk.clone() };
    warm.run(pg.addr(), "/master", &[], None)?;
    warm.run(nginx.addr(), "/master", &[], None)?;

    let sampler = Sampler::start(pg.pid(), std::time::Duration::from_millis(100), o.duration * 200);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for point in points(&lsn) {
        let (ours, theirs) = alternate(point.name, o.rounds, |is_ours| {
            let (addr, pid) = if is_ours { (pg.addr(), pg.pid()) } else { (nginx.addr(), nginx_worker) };
            measure(&tools, &point, addr, pid)
        })?;
        let (Some(a), Some(b)) = (report::median_by(&ours, |r| r.rps), report::median_by(&theirs, |r| r.rps)) else {
            let mut row = vec![point.name.to_owned(), "skipped: oha is not installed".to_owned()];
            row.resize(10, String::new());
            rows.push(row);
            continue;
        };
        let compared = Compared::of(&a, &b);
        rows.push(compared.row(point.name.to_owned(), &a, &b));
        if let Some(want) = point.target_ratio {
            // Met only when both ratios reach the target: on a quiet machine each server saturates its core and
            // the two agree; on a busy one the requests/s ratio mostly measures who got the core.
            let cpu_met = compared.cpu.is_none_or(|cpu| cpu >= want);
            targets.push(Target::new(
                format!("{}: >= {want} x nginx (req/s and CPU per request)", point.name),
                format!(
                    "req/s ratio {:.2} ({} vs {}), CPU ratio {}",
                    compared.rps,
                    rate(a.rps),
                    rate(b.rps),
                    compared.cpu_text()
                ),
                compared.rps >= want && cpu_met,
            ));
        }
    }
    // The Unix socket: wrk speaks TCP only, so the driver's own client (one blocking keep-alive connection
    // per thread, all on the load core) asks both servers.
    let name = "/master over the Unix socket, keep-alive (own client)";
    let (ours, theirs) = alternate(name, o.rounds, |is_ours| {
        let (socket, pid) = if is_ours { (pg_socket.clone(), pg.pid()) } else { (nginx.unix_path(), nginx_worker) };
        let before = procfs::cpu_time(pid)?;
        let result = unixload::run(&socket, "/master", UNIX_CONNECTIONS, o.duration, LOAD_CORE)?;
        let used = procfs::cpu_time(pid)?.since(&before);
        Ok(Some(LoadResult { server_cpu: Some(std::time::Duration::from_nanos(used.sched_ns)), ..result }))
    })?;
    if let (Some(a), Some(b)) = (report::median_by(&ours, |r| r.rps), report::median_by(&theirs, |r| r.rps)) {
        rows.push(Compared::of(&a, &b).row(format!("{name}, {UNIX_CONNECTIONS} connections"), &a, &b));
    }
    let (peak_rss, peak_threads) = sampler.finish();
    let syscalls = match tools::which("strace") {
        Some(strace) => {
            progress("system calls per request under /master load (strace -c)");
            let count = |addr: SocketAddr, pid: u32| -> Result<tools::Syscalls> {
                let load = Wrk { duration: std::time::Duration::from_secs(6), ..tools.wrk.clone() };
                std::thread::scope(|scope| {
                    let running = scope.spawn(|| load.run(addr, "/master", &[], None));
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let counted = tools::count_syscalls(&strace, pid, std::time::Duration::from_secs(3));
                    let _ = running.join();
                    counted
                })
            };
            Some((count(pg.addr(), pg.pid())?, count(nginx.addr(), nginx_worker)?))
        }
        None => None,
    };
    report.line("## HTTP");
    report.line("");
    report.line(format!(
        "pg-status watching a primary and 2 streaming replicas; nginx 1 worker answering `return 200 \"127.0.0.1\"`. \
         wrk: 1 thread, {} connections, {} s, `--latency`; oha: `-c {} -q {FIXED_RATE} --latency-correction`. \
         min_lsn = {lsn} (replayed by both replicas). 'req/s ratio' is pg-status / nginx; 'CPU ratio' is nginx's \
         CPU time per request / pg-status's (the server's own CPU time from the scheduler over the run), which \
         stays meaningful when other work shares the core.",
        o.connections,
        o.duration.as_secs(),
        o.connections
    ));
    report.line("");
    report.table(
        &[
            "point",
            "pg-status req/s",
            "p50",
            "p99",
            "CPU/request",
            "nginx req/s",
            "nginx p99",
            "nginx CPU/request",
            "req/s ratio",
            "CPU ratio",
        ],
        &rows,
    );
    if let Some((ours, theirs)) = &syscalls {
        report.line(format!(
            "System calls per answered request under `/master` load (`strace -c -f`, which slows both servers but \
             not what they call): pg-status {:.2} ({}); nginx {:.2} ({}).",
            ours.per_answer(),
            ours.breakdown(8),
            theirs.per_answer(),
            theirs.breakdown(8)
        ));
        report.line("");
    }
    report.line(format!(
        "pg-status under load: peak resident memory {} (VmHWM {}), at most {} threads.",
        mib(peak_rss),
        mib(procfs::peak_rss_kib(pg.pid()).unwrap_or(0)),
        peak_threads
    ));
    report.line("");
    Ok(targets)
}

/// Runs `measure` for pg-status (`true`) and nginx (`false`) in each of `rounds` rounds, alternating who goes
/// first so a slow drift of the machine's load favours neither; returns each side's results.
fn alternate(
    name: &str,
    rounds: usize,
    mut measure: impl FnMut(bool) -> Result<Option<LoadResult>>,
) -> Result<(Vec<LoadResult>, Vec<LoadResult>)> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        progress(format!("{name} (round {}/{rounds})", round + 1));
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for is_ours in order {
            if let Some(result) = measure(is_ours)? {
                if is_ours {
                    ours.push(result);
                } else {
                    theirs.push(result);
                }
            }
        }
    }
    Ok((ours, theirs))
}

/// pg-status next to nginx at one load point: how many times nginx's requests per second it served, and how
/// many times less CPU per request it used (when both were measured).
struct Compared {
    rps: f64,
    cpu: Option<f64>,
}

impl Compared {
    /// The ratios of pg-status's result `ours` to nginx's `theirs`.
    fn of(ours: &LoadResult, theirs: &LoadResult) -> Compared {
        let rps = if theirs.rps > 0.0 { ours.rps / theirs.rps } else { 0.0 };
        let cpu = match (ours.cpu_us_per_request(), theirs.cpu_us_per_request()) {
            (Some(x), Some(y)) if x > 0.0 => Some(y / x),
            _ => None,
        };
        Compared { rps, cpu }
    }

    fn cpu_text(&self) -> String {
        self.cpu.map_or("-".into(), |r| format!("{r:.2}"))
    }

    /// The table row named `name`: each side's rate (with failures), latency and CPU, then both ratios.
    fn row(&self, name: String, ours: &LoadResult, theirs: &LoadResult) -> Vec<String> {
        let faults = |r: &LoadResult| {
            if r.non_2xx + r.errors == 0 {
                String::new()
            } else {
                format!(" ({} non-2xx, {} errors)", r.non_2xx, r.errors)
            }
        };
        let cpu = |r: &LoadResult| r.cpu_us_per_request().map_or("-".to_owned(), |us| format!("{us:.1} us"));
        vec![
            name,
            format!("{}{}", rate(ours.rps), faults(ours)),
            ms(ours.p50),
            ms(ours.p99),
            cpu(ours),
            format!("{}{}", rate(theirs.rps), faults(theirs)),
            ms(theirs.p99),
            cpu(theirs),
            format!("{:.2}", self.rps),
            self.cpu_text(),
        ]
    }
}
