//! Connection reuse: one PostgreSQL session per host across many polls (seen in `pg_stat_activity` and by the
//! proxy's count of accepted connections), a new one after `conn_max_age_ms`, and none left after SIGTERM.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{for_proxies, start_ready, Checks, SLACK};
use pg_status_tests::pg::Session;
use pg_status_tests::{postgres_or_skip, wait_until, Cluster, ClusterOptions, Node, Proxy};

const SLEEP_MS: u64 = 50;

fn sessions(node: &Node) -> Vec<Session> {
    node.foreign_sessions().expect("pg_stat_activity")
}

#[test]
fn one_session_per_host_reused_then_recycled_by_age() {
    let Some(bins) = postgres_or_skip("one_session_per_host_reused_then_recycled_by_age") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let pm = Proxy::start(m.addr()).expect("proxy");
    let pr = Proxy::start(r.addr()).expect("proxy");
    let mut c = Checks::new();

    // Default conn_max_age (5 minutes): the same session serves every poll.
    let p = start_ready(for_proxies(&[&pm, &pr]).timing(SLEEP_MS, 1000, 3));
    for proxy in [&pm, &pr] {
        p.wait_for_host(&proxy.host(), common::STARTUP, |e| e["alive"] == true).expect("host polled");
    }
    std::thread::sleep(Duration::from_millis(300));
    let first: Vec<Vec<Session>> = [m, r].iter().map(|n| sessions(n)).collect();
    for (node, s) in [m, r].iter().zip(&first) {
        c.eq(&format!("{}: one pg-status session", node.name()), s.len(), 1);
    }
    let accepted_before = (pm.accepted(), pr.accepted());
    std::thread::sleep(Duration::from_millis(40 * SLEEP_MS));
    for (node, s) in [m, r].iter().zip(&first) {
        let now = sessions(node);
        c.eq(&format!("{}: the same session after ~40 polls", node.name()), now, s.clone());
    }
    c.eq("no new TCP connection across ~40 polls", (pm.accepted(), pr.accepted()), accepted_before);
    let failures = p.stdout().texts().iter().filter(|l| l.ends_with(": possible dead")).count() as u64;
    c.check(accepted_before.0 <= 1 + failures && accepted_before.1 <= 1 + failures, || {
        format!("one TCP connection per host, plus one per failure ({failures}): {accepted_before:?}")
    });
    // The session really was used: /hosts keeps changing with the master's WAL position.
    drop(p);
    for node in [m, r] {
        wait_until(SLACK, "sessions of a killed pg-status to end", || sessions(node).is_empty().then_some(()))
            .expect("sessions end when pg-status goes away");
    }

    // conn_max_age_ms = 500: connections are recycled, the old one closed, never more than one kept.
    let (pm_base, pr_base) = (pm.accepted(), pr.accepted());
    let age_ms = 500;
    let mut p =
        start_ready(for_proxies(&[&pm, &pr]).timing(SLEEP_MS, 1000, 3).env("pg_status__conn_max_age_ms", age_ms));
    let start = Instant::now();
    let mut pids = BTreeSet::new();
    let mut most = 0;
    while start.elapsed() < Duration::from_millis(6 * age_ms) {
        let s = sessions(m);
        most = most.max(s.len());
        pids.extend(s.iter().map(|s| s.pid));
        std::thread::sleep(Duration::from_millis(25));
    }
    let elapsed = start.elapsed();
    c.check(pids.len() >= 3, || {
        format!(
            "sessions recycled about every {age_ms} ms over {elapsed:?}: pids {pids:?}, connections {:?}; {}",
            (pm.accepted() - pm_base, pr.accepted() - pr_base),
            p.output_dump()
        )
    });
    c.check(most <= 2, || format!("an old session is closed when replaced: up to {most} sessions at once"));
    let opened = (pm.accepted() - pm_base, pr.accepted() - pr_base);
    // Connections opened per host <= 1 + elapsed / conn_max_age + failures (+1 for start-up and sampling).
    let bound = 2 + (elapsed.as_millis() as u64 + 1000) / age_ms;
    c.check(opened.0 >= 4 && opened.0 <= bound && opened.1 >= 4 && opened.1 <= bound, || {
        format!("connections opened per host within {elapsed:?}: {opened:?}, want 4..={bound}")
    });

    // SIGTERM closes the database sessions.
    p.terminate().expect("sigterm");
    let status = p.wait_exit(Duration::from_secs(5)).expect("exit");
    c.eq("exit status after SIGTERM", status.code(), Some(0));
    for node in [m, r] {
        let gone = wait_until(SLACK, "sessions to end after SIGTERM", || sessions(node).is_empty().then_some(()));
        c.check(gone.is_ok(), || format!("{}: sessions after SIGTERM: {:?}", node.name(), sessions(node)));
    }
    c.finish();
}

#[test]
fn default_sleep_ms_polls_every_five_seconds() {
    let Some(bins) = postgres_or_skip("default_sleep_ms_polls_every_five_seconds") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(0)).expect("cluster");
    let m = cluster.node(0);
    // Only the HTTP settings: every polling parameter keeps its default (sleep_ms 5000).
    let p = start_ready(
        pg_status_tests::PgStatusBuilder::new(&common::bin()).expect("builder").hosts(&[(m.host(), m.port())]),
    );
    common::settle(&p, "/master", &m.host());
    let writer =
        pg_status_tests::pg::Writer::start(m, 5, Duration::from_millis(50), Duration::from_secs(30)).expect("writer");
    let start = Instant::now();
    let mut changes = Vec::new();
    let mut last = p.host_entry(&m.host()).expect("entry")["lsn"].clone();
    while start.elapsed() < Duration::from_millis(7500) {
        let lsn = p.host_entry(&m.host()).expect("entry")["lsn"].clone();
        if lsn != last {
            changes.push(start.elapsed());
            last = lsn;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    writer.stop();
    // The WAL moves all the time, but the published position only changes once per poll: once or twice in
    // 7.5 s with a 5 s interval (never every 100 ms).
    assert!(
        (1..=2).contains(&changes.len()),
        "the master's lsn changed at {changes:?}: want one change per default 5 s poll"
    );
    if let [a, b] = changes[..] {
        assert!(b - a >= Duration::from_millis(4500), "polls {:?} apart, want about 5 s", b - a);
    }
}
