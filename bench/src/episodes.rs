//! Fast failover at default settings, side by side in one run: failover episodes and the connection watch on
//! (the default `pg_status__fast_sleep_ms=100`) and off (`0`, the fixed 5 s schedule). Per round, on a fresh
//! cluster: a replica crash until `/replica` stops naming it, the master's stop until it is possibly dead,
//! and a promotion 2 s later until `/master` names the new master.

use std::time::{Duration, Instant};

use pg_status_tests::{PgStatus, PgStatusBuilder};

use crate::error::{Error, Result};
use crate::failover::{promoted_at, wait_master, watch_promotion};
use crate::report::{ms, progress, Report};
use crate::{Ctx, Target};

/// Longest wait for any awaited change (the fixed schedule needs up to `sleep_ms`, 5 s, plus a poll).
const WAIT: Duration = Duration::from_secs(20);

/// How often the benchmark asks pg-status while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// `pg_status__fast_sleep_ms` at its default, the target's reference.
const FAST_SLEEP: Duration = Duration::from_millis(100);

/// One round's measurements.
struct Round {
    /// `pg_ctl stop -m immediate` of a replica to `/hosts` showing it possibly dead (out of the rotation:
    /// a healthy replica is preferred).
    replica_out: Duration,
    /// The same, from the moment `pg_ctl` returned (the signal had been sent by then): without the cost of
    /// starting `pg_ctl`.
    replica_out_signalled: Duration,
    /// `pg_ctl stop -m fast` of the master started to `/hosts` showing it possibly dead.
    master_down: Duration,
    /// The promoted replica left recovery (seen by a watcher connection) to `/master` naming it.
    promotion: Duration,
    /// The same, to pg-status's `<host>: master` line.
    promotion_line: Duration,
}

/// pg-status at default settings, but for the log level, with `fast_sleep_ms`.
fn builder(ctx: &Ctx, fast_sleep_ms: u64) -> Result<PgStatusBuilder> {
    let b = ctx.pg_status()?;
    let b =
        ["pg_status__sleep_ms", "pg_status__query_timeout_ms", "pg_status__max_fails", "pg_status__connect_timeout"]
            .iter()
            .fold(b, |b, name| b.without(name));
    Ok(b.env("pg_status__fast_sleep_ms", fast_sleep_ms))
}

/// Waits (bounded) until `/hosts` shows `host` possibly dead or dead; returns when it saw it.
fn wait_unhealthy(pg: &PgStatus, host: &str) -> Result<Instant> {
    let started = Instant::now();
    loop {
        let hosts = pg.hosts()?;
        let entry = hosts.iter().find(|h| h.get("host").and_then(|v| v.as_str()) == Some(host));
        let flag = |name: &str| entry.and_then(|h| h.get(name)).and_then(|v| v.as_bool());
        if flag("possible_dead") == Some(true) || flag("alive") == Some(false) {
            return Ok(Instant::now());
        }
        if started.elapsed() > WAIT {
            return Err(Error::Unexpected(format!("{host} still healthy in /hosts after {WAIT:?}")));
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

fn round(ctx: &Ctx, fast_sleep_ms: u64, number: usize) -> Result<Round> {
    progress(format!("fast failover round {number}, fast_sleep_ms={fast_sleep_ms}"));
    let cluster = ctx.start_cluster(2)?;
    let hosts: Vec<(String, u16)> = (0..3).map(|i| (cluster.node(i).host(), cluster.node(i).port())).collect();
    let names: Vec<String> = hosts.iter().map(|(h, _)| h.clone()).collect();
    let pg = builder(ctx, fast_sleep_ms)?.hosts(&hosts).spawn()?;
    pg.wait_ready(WAIT)?;
    pg.wait_for_response("/master", None, WAIT, |r| r.status == 200 && r.text() == names[0])?;
    // Somewhere between two regular polls, as a crash would be.
    std::thread::sleep(Duration::from_millis(1500 + 700 * number as u64 % 3000));

    let crashed = Instant::now();
    cluster.node(2).signal_stop("immediate")?;
    let signalled = Instant::now();
    let out_at = wait_unhealthy(&pg, &names[2])?;
    let (replica_out, replica_out_signalled) = (out_at - crashed, out_at.saturating_duration_since(signalled));
    cluster.node(2).wait_stopped()?;

    std::thread::sleep(Duration::from_millis(1200));
    let stopping = Instant::now();
    cluster.node(0).signal_stop("fast")?;
    let master_down = wait_unhealthy(&pg, &names[0])? - stopping;
    cluster.node(0).wait_stopped()?;

    std::thread::sleep(Duration::from_secs(2));
    let mark = pg.stdout().len();
    let watcher = watch_promotion(cluster.node(1), WAIT)?;
    cluster.node(1).signal_promote()?;
    let promoted = promoted_at(watcher)?;
    let switched = wait_master(&pg, &names[1], WAIT, PROBE_EVERY)?;
    let line = pg.stdout().wait_for_line_after(mark, &format!("{}: master", names[1]), WAIT)?.1.at;
    Ok(Round {
        replica_out,
        replica_out_signalled,
        master_down,
        promotion: switched.saturating_duration_since(promoted),
        promotion_line: line.saturating_duration_since(promoted),
    })
}

fn percentile(mut samples: Vec<Duration>, p: usize) -> Duration {
    samples.sort();
    let i = (samples.len() * p).div_ceil(100).saturating_sub(1);
    samples.get(i).copied().unwrap_or_default()
}

/// Runs the fast-failover part of the failover section; returns its targets.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<Vec<Target>> {
    let rounds = ctx.options.failover_rounds.max(1) * 2;
    let mut on = Vec::new();
    let mut off = Vec::new();
    // Interleaved, so both settings see the same machine.
    for n in 1..=rounds {
        on.push(round(ctx, FAST_SLEEP.as_millis() as u64, n)?);
        off.push(round(ctx, 0, n)?);
    }
    report.line("## Fast failover at default settings");
    report.line("");
    report.line(format!(
        "A primary and 2 streaming replicas, pg-status with every setting at its default but the HTTP port, {rounds} \
         fresh clusters per column, the two settings interleaved. The benchmark asks /hosts and /master every \
         {} ms. Replica crash: `pg_ctl stop -m immediate -W` (the signal sent) to /hosts showing it possibly dead (a healthy replica \
         is then preferred); master stop: `pg_ctl stop -m fast -W` to possibly dead; promotion: the \
         promoted replica leaving recovery (seen by a watching connection) to /master naming it, 2 s after the \
         master's stop.",
        PROBE_EVERY.as_millis()
    ));
    report.line("");
    let stat = |rounds: &[Round], f: fn(&Round) -> Duration| {
        let samples: Vec<Duration> = rounds.iter().map(f).collect();
        format!("{} / {}", ms(percentile(samples.clone(), 50)), ms(percentile(samples, 99)))
    };
    let rows = vec![
        vec![
            "replica crash -> out of /replica".to_owned(),
            stat(&on, |r| r.replica_out),
            stat(&off, |r| r.replica_out),
        ],
        vec![
            "replica crash -> out of /replica, from `pg_ctl` returned".to_owned(),
            stat(&on, |r| r.replica_out_signalled),
            stat(&off, |r| r.replica_out_signalled),
        ],
        vec!["master stop -> possibly dead".to_owned(), stat(&on, |r| r.master_down), stat(&off, |r| r.master_down)],
        vec!["promotion -> /master".to_owned(), stat(&on, |r| r.promotion), stat(&off, |r| r.promotion)],
        vec![
            "promotion -> `master` line".to_owned(),
            stat(&on, |r| r.promotion_line),
            stat(&off, |r| r.promotion_line),
        ],
    ];
    report.table(&["p50 / p99", "fast_sleep_ms=100 (default)", "fast_sleep_ms=0 (fixed schedule)"], &rows);
    let promotion_p99 = percentile(on.iter().map(|r| r.promotion).collect(), 99);
    let replica_p99 = percentile(on.iter().map(|r| r.replica_out).collect(), 99);
    let promotion_bound = FAST_SLEEP + Duration::from_millis(10);
    Ok(vec![
        Target::new(
            "promotion to /master within fast_sleep_ms + one poll round trip (about 110 ms), p99",
            format!("p99 {} over {rounds} rounds (bound {})", ms(promotion_p99), ms(promotion_bound)),
            promotion_p99 <= promotion_bound,
        ),
        Target::new(
            "replica crash to out of /replica under 20 ms, p99",
            format!("p99 {} over {rounds} rounds", ms(replica_p99)),
            replica_p99 < Duration::from_millis(20),
        ),
    ])
}
