//! The cost of polling many hosts: pg-status (pinned to one core) polls 10, 100 and 1,000 fake PostgreSQL
//! servers (on the other core) every second; CPU time and resident memory are read from `/proc`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fakepg::Fleet;
use crate::procfs;
use crate::report::{mib, progress, Report};
use crate::{Ctx, Target, LOAD_CORE};

struct Point {
    hosts: usize,
    window: Duration,
    polls: u64,
    cpu: procfs::CpuTime,
    rss_kib: u64,
    threads: u64,
    sessions: u64,
    stderr_lines: usize,
}

impl Point {
    fn polls_per_second(&self) -> f64 {
        self.polls as f64 / self.window.as_secs_f64()
    }

    /// Share of one core, from the scheduler's nanoseconds.
    fn core_share(&self) -> f64 {
        self.cpu.sched_ns as f64 / 1e9 / self.window.as_secs_f64()
    }

    /// Share of one core, from utime + stime (10 ms ticks).
    fn core_share_ticks(&self) -> f64 {
        self.cpu.ticks_duration().as_secs_f64() / self.window.as_secs_f64()
    }

    fn cpu_per_poll_us(&self) -> f64 {
        if self.polls == 0 {
            0.0
        } else {
            self.cpu.sched_ns as f64 / 1e3 / self.polls as f64
        }
    }
}

fn measure(ctx: &Ctx, n: usize) -> Result<Point> {
    progress(format!("polling: {n} fake hosts"));
    let fleet = Fleet::start(n, LOAD_CORE)?;
    let hosts: Vec<(String, u16)> = fleet.addrs().iter().map(|a| (a.ip().to_string(), a.port())).collect();
    let pg = ctx.start_pg_status(&hosts, Duration::from_secs(60))?;
    // Let every host's connection open and the schedule spread out.
    std::thread::sleep(Duration::from_millis(2 * crate::SLEEP_MS + 500));
    let pid = pg.pid();
    let cpu0 = procfs::cpu_time(pid)?;
    let polls0 = fleet.counters().queries.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(ctx.options.poll_window);
    let cpu1 = procfs::cpu_time(pid)?;
    let polls1 = fleet.counters().queries.load(Ordering::Relaxed);
    let window = started.elapsed();
    Ok(Point {
        hosts: n,
        window,
        polls: polls1 - polls0,
        cpu: cpu1.since(&cpu0),
        rss_kib: procfs::rss_kib(pid)?,
        threads: procfs::threads(pid)?,
        sessions: fleet.counters().sessions.load(Ordering::Relaxed),
        stderr_lines: pg.stderr().len(),
    })
}

/// Runs the polling section; returns its targets.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<Vec<Target>> {
    pg_status_tests::net::raise_nofile_limit(8192)?;
    let mut points = Vec::new();
    for &n in &ctx.options.host_counts {
        points.push(measure(ctx, n)?);
    }
    report.line("## Polling cost");
    report.line("");
    report.line(format!(
        "pg-status polls fake PostgreSQL servers (the simulation crate's wire-protocol server on real loopback \
         sockets, one fixed row per poll) every {} ms; CPU over a {} s window, from the scheduler \
         (`/proc/PID/task/*/schedstat`) and from utime+stime (`/proc/PID/stat`, 10 ms ticks).",
        crate::SLEEP_MS,
        ctx.options.poll_window.as_secs()
    ));
    report.line("");
    let first = points.first().map(|p| (p.hosts, p.rss_kib));
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let per_host = match first {
                Some((h, rss)) if p.hosts > h => {
                    format!("{:.1} KiB", (p.rss_kib as f64 - rss as f64) / (p.hosts - h) as f64)
                }
                _ => "-".into(),
            };
            vec![
                p.hosts.to_string(),
                format!("{:.0}", p.polls_per_second()),
                format!("{:.2}% ({:.1}% by ticks)", p.core_share() * 100.0, p.core_share_ticks() * 100.0),
                format!("{:.1} us", p.cpu_per_poll_us()),
                mib(p.rss_kib),
                per_host,
                p.threads.to_string(),
                p.sessions.to_string(),
                p.stderr_lines.to_string(),
            ]
        })
        .collect();
    report.table(
        &[
            "hosts",
            "polls/s",
            "CPU, share of one core",
            "CPU per host-poll",
            "resident memory",
            "memory per extra host",
            "threads",
            "sessions opened",
            "stderr lines",
        ],
        &rows,
    );
    let mut targets = Vec::new();
    if let Some(p) = points.iter().find(|p| p.hosts == 1000) {
        targets.push(Target::new(
            "1,000 hosts every 1,000 ms: < 10% of one core",
            format!("{:.2}%", p.core_share() * 100.0),
            p.core_share() < 0.10,
        ));
        targets.push(Target::new("1,000 hosts every 1,000 ms: < 30 MiB", mib(p.rss_kib), p.rss_kib < 30 * 1024));
    }
    Ok(targets)
}
