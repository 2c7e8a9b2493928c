//! Failover speed on a real cluster: a crashed replica and a hung one (frozen behind a proxy) until `dead`,
//! and a promotion until `/master` names the new master.

use std::time::{Duration, Instant};

use pg_status_core::observation::POLL_QUERY;
use pg_status_tests::{Cluster, Node, PgStatus, Proxy};

use crate::error::{Error, Result};
use crate::report::{ms, progress, Report};
use crate::{Ctx, Target, MAX_FAILS, QUERY_TIMEOUT_MS, SLEEP_MS};

/// Longest wait for any awaited transition.
const WAIT: Duration = Duration::from_secs(30);

/// How often the benchmark asks pg-status while waiting for a transition.
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// One round's measurements.
struct Round {
    /// Crash (pg_ctl stop -m immediate) to `/hosts` alive:false, and to the `dead` line.
    crash_http: Duration,
    crash_line: Duration,
    /// Proxy frozen (hung host) to `/hosts` alive:false, and to the `dead` line.
    hang_http: Duration,
    hang_line: Duration,
    /// Promotion observed (the new master's `pg_is_in_recovery()` turned false) to `/master` naming it, and
    /// to its `master` line.
    switch_http: Duration,
    switch_line: Duration,
    /// `pg_ctl promote` started to the promotion observed.
    promote_took: Duration,
    /// Median round trip of the poll query on an open session, measured by the benchmark.
    poll_rtt: Duration,
}

/// The boolean field `flag` (`alive`, `possible_dead`, ...) of `host` in a fresh `/hosts` answer.
pub(crate) fn host_flag(pg: &PgStatus, host: &str, flag: &str) -> Result<Option<bool>> {
    let hosts = pg.hosts()?;
    Ok(hosts
        .iter()
        .find(|h| h.get("host").and_then(|v| v.as_str()) == Some(host))
        .and_then(|h| h.get(flag))
        .and_then(|v| v.as_bool()))
}

/// Asks `/master` every `every` until it names `host`, for at most `wait`; returns when it first did.
pub(crate) fn wait_master(pg: &PgStatus, host: &str, wait: Duration, every: Duration) -> Result<Instant> {
    let started = Instant::now();
    loop {
        let r = pg.get("/master")?;
        if r.status == 200 && r.text() == host {
            return Ok(Instant::now());
        }
        if started.elapsed() > wait {
            return Err(Error::Unexpected(format!("/master still answers {r} after {wait:?}")));
        }
        std::thread::sleep(every);
    }
}

/// Waits (bounded) for the first moment `/hosts` shows `host` as not alive; returns when it saw it.
fn wait_not_alive(pg: &PgStatus, hosts: &[&str]) -> Result<Vec<Instant>> {
    let started = Instant::now();
    let mut seen: Vec<Option<Instant>> = vec![None; hosts.len()];
    while seen.iter().any(Option::is_none) {
        if started.elapsed() > WAIT {
            return Err(Error::Unexpected(format!("{hosts:?} still alive in /hosts after {WAIT:?}")));
        }
        for (i, host) in hosts.iter().enumerate() {
            if seen[i].is_none() && host_flag(pg, host, "alive")? == Some(false) {
                seen[i] = Some(Instant::now());
            }
        }
        std::thread::sleep(PROBE_EVERY);
    }
    Ok(seen.into_iter().flatten().collect())
}

/// Watches `node` from a connection of its own, until it leaves recovery or `wait` has passed; the thread
/// returns when it saw the promotion. It pauses half a millisecond between looks: a spinning watcher would take
/// the CPU pg-status needs on a 2-core machine.
pub(crate) fn watch_promotion(node: &Node, wait: Duration) -> Result<std::thread::JoinHandle<Option<Instant>>> {
    let mut watch = node.connect_as("pg-status-bench-watch")?;
    Ok(std::thread::spawn(move || -> Option<Instant> {
        let started = Instant::now();
        while started.elapsed() < wait {
            let in_recovery = watch.simple_query("SELECT pg_is_in_recovery()").ok().and_then(|m| {
                m.into_iter().find_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
                    _ => None,
                })
            });
            if in_recovery == Some(false) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        None
    }))
}

/// When the watcher of [`watch_promotion`] saw the promotion.
pub(crate) fn promoted_at(watcher: std::thread::JoinHandle<Option<Instant>>) -> Result<Instant> {
    watcher.join().ok().flatten().ok_or_else(|| Error::Unexpected("the promoted replica never left recovery".into()))
}

fn poll_rtt(cluster: &Cluster, node: usize) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        cluster.node(node).query(POLL_QUERY)?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

fn round(ctx: &Ctx, number: usize) -> Result<Round> {
    progress(format!("failover round {number}"));
    let cluster = ctx.start_cluster(3)?;
    let proxy = Proxy::start(cluster.node(3).addr())?;
    let names: Vec<String> = (0..3).map(|i| cluster.node(i).host()).chain([proxy.host()]).collect();
    let mut hosts: Vec<(String, u16)> = (0..3).map(|i| (cluster.node(i).host(), cluster.node(i).port())).collect();
    hosts.push((proxy.host(), proxy.port()));
    let pg = ctx.start_pg_status(&hosts, WAIT)?;
    pg.wait_for_response("/master", None, WAIT, |r| r.status == 200 && r.text() == names[0])?;
    std::thread::sleep(Duration::from_millis(SLEEP_MS + 500));

    // A crashed replica and a hung one, at the same time.
    let from = pg.stdout().len();
    let crashed_at = Instant::now();
    cluster.node(2).kill()?;
    let frozen_at = Instant::now();
    proxy.freeze();
    let seen = wait_not_alive(&pg, &[&names[2], &names[3]])?;
    let line_at = |from: usize, name: &str, what: &str| -> Result<Instant> {
        Ok(pg.stdout().wait_for_line_after(from, &format!("{name}: {what}"), WAIT)?.1.at)
    };
    let crash_line = line_at(from, &names[2], "dead")?;
    let hang_line = line_at(from, &names[3], "dead")?;

    // The master crashes; once pg-status has noticed, a replica is promoted.
    let from = pg.stdout().len();
    cluster.node(0).kill()?;
    line_at(from, &names[0], "possible dead")?;
    let watcher = watch_promotion(cluster.node(1), WAIT)?;
    let promote_started = Instant::now();
    cluster.node(1).promote()?;
    let promoted = promoted_at(watcher)?;
    let switched = wait_master(&pg, &names[1], WAIT, PROBE_EVERY)?;
    let master_line = line_at(from, &names[1], "master")?;
    let rtt = poll_rtt(&cluster, 1)?;
    Ok(Round {
        crash_http: seen[0] - crashed_at,
        crash_line: crash_line - crashed_at,
        hang_http: seen[1] - frozen_at,
        hang_line: hang_line - frozen_at,
        switch_http: switched.saturating_duration_since(promoted),
        switch_line: master_line.saturating_duration_since(promoted),
        promote_took: promoted - promote_started,
        poll_rtt: rtt,
    })
}

/// Runs the failover section; returns its targets.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<Vec<Target>> {
    let mut rounds = Vec::new();
    for n in 1..=ctx.options.failover_rounds {
        rounds.push(round(ctx, n)?);
    }
    let sleep = Duration::from_millis(SLEEP_MS);
    let dead_bound = Duration::from_millis(u64::from(MAX_FAILS) * (SLEEP_MS + QUERY_TIMEOUT_MS));
    report.line("## Failover");
    report.line("");
    report.line(format!(
        "A primary, 3 streaming replicas (one behind a switchable proxy) and pg-status with sleep_ms={SLEEP_MS}, \
         query_timeout_ms={QUERY_TIMEOUT_MS}, max_fails={MAX_FAILS}, a fresh cluster per round. The benchmark \
         asks pg-status every {} ms; 'line' is when pg-status printed the transition.",
        PROBE_EVERY.as_millis()
    ));
    report.line("");
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                format!("{} (line {})", ms(r.switch_http), ms(r.switch_line)),
                ms(sleep + r.poll_rtt),
                ms(r.promote_took),
                format!("{} (line {})", ms(r.crash_http), ms(r.crash_line)),
                format!("{} (line {})", ms(r.hang_http), ms(r.hang_line)),
                ms(dead_bound),
            ]
        })
        .collect();
    report.table(
        &[
            "round",
            "promotion -> /master switched",
            "sleep_ms + one poll",
            "pg_ctl promote took",
            "crash -> alive:false",
            "hang -> alive:false",
            "max_fails x (sleep_ms + query_timeout_ms)",
        ],
        &rows,
    );
    let worst_switch = rounds.iter().map(|r| r.switch_http).max().unwrap_or_default();
    let worst_bound = rounds.iter().map(|r| sleep + r.poll_rtt).min().unwrap_or(sleep);
    let worst_dead = rounds.iter().flat_map(|r| [r.crash_http, r.hang_http]).max().unwrap_or_default();
    Ok(vec![
        Target::new(
            "failover: /master switches within sleep_ms + one poll round trip of the promotion",
            format!("worst {} (bound {})", ms(worst_switch), ms(worst_bound)),
            worst_switch <= worst_bound,
        ),
        Target::new(
            "a crashed or hung host is dead within max_fails x (sleep_ms + query_timeout_ms)",
            format!("worst {} (bound {})", ms(worst_dead), ms(dead_bound)),
            worst_dead <= dead_bound,
        ),
    ])
}
