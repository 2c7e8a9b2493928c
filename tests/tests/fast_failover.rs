//! Fast failover with real servers at default settings (only the HTTP port and the hosts set): a replica
//! stopped with `-m immediate` leaves `/replica` at once (its connection closes, the immediate poll is
//! refused); the master stopped with `-m fast` starts a failover episode, and the replica promoted 2 s later
//! is named by `/master` within a fast interval or so; a healthy cluster gets exactly the polls `sleep_ms`
//! allows, and no episode.
//!
//! Bounds here are generous (shared machines); the benchmark reports the real figures.

mod common;

use std::time::{Duration, Instant};

use common::{for_nodes, start_ready, Checks};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, Node, PgStatus, PgStatusBuilder};

/// A builder for `nodes` at default settings: the test harness's fast timing taken out again.
fn at_defaults(nodes: &[&Node]) -> PgStatusBuilder {
    ["pg_status__sleep_ms", "pg_status__query_timeout_ms", "pg_status__max_fails", "pg_status__connect_timeout"]
        .iter()
        .fold(for_nodes(nodes), |b, name| b.without(name))
}

/// A metric's value for one label set (`name{labels} value`), or the unlabelled one.
fn metric(p: &PgStatus, series: &str) -> Option<f64> {
    let text = p.get("/metrics").ok()?.text();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The metric once it reads `want`, or what it read last after a second: the poller publishes what
/// `/metrics` shows at most every 100 ms.
fn metric_settled(p: &PgStatus, series: &str, want: f64) -> Option<f64> {
    let started = Instant::now();
    loop {
        let value = metric(p, series);
        if value == Some(want) || started.elapsed() > Duration::from_secs(1) {
            return value;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stopped_replica_leaves_at_once_and_a_promotion_is_seen_within_the_fast_interval() {
    let Some(bins) =
        postgres_or_skip("a_stopped_replica_leaves_at_once_and_a_promotion_is_seen_within_the_fast_interval")
    else {
        return;
    };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    let p = start_ready(at_defaults(&[m, r1, r2]));
    common::settle(&p, "/master", &mh);
    let out = p.stdout();
    let mut c = Checks::new();

    // Both replicas in rotation first.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(common::plain_200(&p, "/replica"));
    }
    c.eq("both replicas in rotation", seen.len(), 2);

    // A replica crashes: out of the rotation long before the next regular poll (5 s away).
    r2.kill().expect("stop r2 -m immediate");
    let crashed = Instant::now();
    let mut in_a_row = 0;
    let left = loop {
        let answer = common::plain_200(&p, "/replica");
        in_a_row = if answer == r2h { 0 } else { in_a_row + 1 };
        // Ten answers in a row without it: round robin over the two would have named it five times.
        if in_a_row == 10 {
            break crashed.elapsed();
        }
        if crashed.elapsed() > Duration::from_secs(5) {
            break crashed.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!("replica crash to out of /replica: {left:?}");
    c.check(left < Duration::from_secs(1), || format!("{r2h} still in /replica {left:?} after its crash"));

    // The master stops cleanly: its connection closes and an episode starts at once.
    let mark = out.len();
    let stopped = Instant::now();
    m.stop().expect("stop the master -m fast");
    let episode = |l: &str| l.starts_with("failover episode started");
    let started = out.wait_for(mark, "an episode", Duration::from_secs(2), episode);
    c.check(started.is_ok(), || format!("no episode within 2 s of the master's stop: {:?}", out.texts()));
    if let Ok((_, line)) = &started {
        let after = line.at.duration_since(stopped);
        eprintln!("master stop to episode start: {after:?}: {}", line.text);
        c.check(line.text.contains(&mh), || format!("the episode names the master: {}", line.text));
    }
    out.wait_for_line_after(mark, &format!("{mh}: possible dead"), Duration::from_secs(2))
        .expect("the master is possibly dead within 2 s of its stop");

    // A replica is promoted 2 s later: /master follows within the fast interval and a poll or two.
    std::thread::sleep(Duration::from_secs(2));
    let promoting = Instant::now();
    r1.promote().expect("promote r1");
    let promoted = promoting.elapsed();
    p.wait_for_body("/master", &r1h, Duration::from_secs(3)).expect("/master names the promoted replica");
    let took = promoting.elapsed();
    // `pg_ctl promote -w` returns once the server left recovery; pg-status may have seen it before then.
    eprintln!("pg_ctl promote took {promoted:?}; /master named the new master {took:?} after it was called");
    c.check(took < promoted + Duration::from_secs(1), || format!("/master took {took:?} (promote: {promoted:?})"));
    let ended =
        out.wait_for(mark, "the episode's end", Duration::from_secs(5), |l| l.starts_with("failover episode ended"));
    c.check(ended.as_ref().is_ok_and(|(_, l)| l.text.ends_with(&format!("{r1h} is the master"))), || {
        format!("the episode ends on the new master: {ended:?}")
    });
    c.eq("one episode", metric_settled(&p, "pg_status_failover_episodes_total", 1.0), Some(1.0));
    c.eq("no episode running", metric_settled(&p, "pg_status_failover_episode", 0.0), Some(0.0));
    c.eq("no split brain announced", out.count_since(mark, "split brain"), 0);
    c.finish();
}

#[test]
fn a_healthy_cluster_gets_exactly_the_steady_state_polls() {
    let Some(bins) = postgres_or_skip("a_healthy_cluster_gets_exactly_the_steady_state_polls") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let p = start_ready(at_defaults(&[m, r]));
    common::settle(&p, "/master", &m.host());
    let mut c = Checks::new();
    let count = |host: &str| metric(&p, &format!("pg_status_poll_duration_seconds_count{{host=\"{host}\"}}"));
    let before: Vec<Option<f64>> = [m.host(), r.host()].iter().map(|h| count(h)).collect();
    let watched = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let after: Vec<Option<f64>> = [m.host(), r.host()].iter().map(|h| count(h)).collect();
    let elapsed = watched.elapsed();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let (Some(b), Some(a)) = (b, a) else {
            c.check(false, || format!("host {i}: no poll count in /metrics"));
            continue;
        };
        let polls = a - b;
        // Every 5 s plus a round trip: 30 s hold 5 or 6 of them, depending on where the window falls.
        let most = (elapsed.as_millis() / 5000 + 1) as f64;
        c.check((5.0..=most).contains(&polls), || format!("host {i}: {polls} polls in {elapsed:?}"));
    }
    c.eq("no episode", metric(&p, "pg_status_failover_episodes_total"), Some(0.0));
    c.eq("no episode line", p.stdout().count("failover episode"), 0);
    c.finish();
}
