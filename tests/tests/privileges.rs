//! Least-privilege monitoring roles (DESIGN 12) against real PostgreSQL: a superuser, a LOGIN role in
//! `pg_monitor`, a plain LOGIN role that may read `pg_stat_wal_receiver` but not its details, and a plain
//! LOGIN role with SELECT on that view revoked (as hardening guides recommend). Every role keeps every host
//! alive, the master and the replicas right and the lag measured; what degrades is the replicas' timeline,
//! and each missing privilege is announced by exactly one warning.

mod common;

use std::time::{Duration, Instant};

use common::{for_nodes, start_ready, Checks, SLACK, STARTUP};
use pg_status_tests::pg::{create_load_table, write_rows};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus};

/// One monitoring role under test.
struct Role {
    /// The role name, also the label in failure messages.
    name: &'static str,
    password: &'static str,
    /// Replica timelines are visible to it.
    sees_timelines: bool,
    /// The stderr warnings it earns, each expected exactly once (a text each contains).
    warnings: &'static [&'static str],
}

const REFUSED: &str = "permission denied for pg_catalog.pg_stat_wal_receiver";
const HIDDEN: &str = "sees no details in pg_catalog.pg_stat_wal_receiver";
const BLIND: &str = "pg_status__split_brain=timeline cannot see replica timelines";

const ROLES: [Role; 4] = [
    Role { name: "postgres", password: "postgres", sees_timelines: true, warnings: &[] },
    Role { name: "monitor", password: "M0nitor-pw", sees_timelines: true, warnings: &[] },
    Role { name: "peeker", password: "Peek3r-pw", sees_timelines: false, warnings: &[HIDDEN, BLIND] },
    Role { name: "plain", password: "Pl4in-pw", sees_timelines: false, warnings: &[REFUSED, BLIND] },
];

/// How many stderr lines contain `text`.
fn count(p: &PgStatus, text: &str) -> usize {
    p.stderr().texts().iter().filter(|l| l.contains(text)).count()
}

#[test]
fn every_role_keeps_hosts_alive_and_lag_measured_and_missing_privileges_are_warned_about_once() {
    let Some(bins) = postgres_or_skip("privileges") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    // The hardening recipe: the view is revoked from PUBLIC and granted back only where it is wanted.
    m.execute(
        "CREATE ROLE monitor LOGIN PASSWORD 'M0nitor-pw'; GRANT pg_monitor TO monitor; \
         CREATE ROLE peeker LOGIN PASSWORD 'Peek3r-pw'; \
         CREATE ROLE plain LOGIN PASSWORD 'Pl4in-pw'; \
         REVOKE SELECT ON pg_catalog.pg_stat_wal_receiver FROM PUBLIC; \
         GRANT SELECT ON pg_catalog.pg_stat_wal_receiver TO pg_monitor, peeker",
    )
    .expect("roles");
    create_load_table(m).expect("table");
    cluster.wait_caught_up(STARTUP).expect("the roles reach the replicas");
    let log_before: Vec<usize> = cluster.nodes().iter().map(refusals).collect();

    // One sidecar per role, all at once; the timeline policy where it has something to warn about.
    let sidecars: Vec<PgStatus> = ROLES
        .iter()
        .map(|role| {
            let mut b = for_nodes(&[m, r1, r2])
                .env("pg_status__pg_user", role.name)
                .env("pg_status__pg_password", role.password)
                .env("pg_status__sync_max_lag_bytes", 1000);
            if role.name != "monitor" {
                b = b.env("pg_status__split_brain", "timeline");
            }
            start_ready(b)
        })
        .collect();

    let mut c = Checks::new();
    for (role, p) in ROLES.iter().zip(&sidecars) {
        common::settle(p, "/master", &mh);
        for h in [&r1h, &r2h] {
            let entry = p
                .wait_for_host(h, STARTUP, |e| e["alive"] == true && e["lag_bytes"].is_u64())
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", role.name, p.output_dump()));
            c.eq(&format!("{}: {h} is a replica", role.name), &entry["master"], &serde_json::json!(false));
            c.check(entry["lag_ms"].is_u64(), || format!("{}: {h} has lag_ms: {entry}", role.name));
            let timeline = if role.sees_timelines { serde_json::json!(1) } else { serde_json::Value::Null };
            c.eq(&format!("{}: {h} timeline", role.name), &entry["timeline"], &timeline);
        }
        let master = p.host_entry(&mh).expect("master entry");
        c.eq(
            &format!("{}: the master's timeline is always known", role.name),
            &master["timeline"],
            &serde_json::json!(1),
        );
        let replica = common::plain_200(p, "/replica");
        c.check(replica == r1h || replica == r2h, || format!("{}: /replica -> {replica}", role.name));
    }

    // Lag is measured whatever the role: paused replay on r1 shows in lag_bytes and in the routes.
    r1.pause_replay().expect("pause r1");
    write_rows(m, 2000).expect("write");
    for (role, p) in ROLES.iter().zip(&sidecars) {
        let late = p.wait_for_host(&r1h, Duration::from_secs(20), |e| {
            e["alive"] == true && e["lag_bytes"].as_u64().is_some_and(|b| b > 1000)
        });
        c.check(late.is_ok(), || format!("{}: r1's lag shows: {late:?}", role.name));
        let settled = p.wait_for_body("/sync_by_bytes", &r2h, Duration::from_secs(20));
        c.check(settled.is_ok(), || format!("{}: /sync_by_bytes avoids r1: {settled:?}", role.name));
    }
    r1.resume_replay().expect("resume r1");
    for (role, p) in ROLES.iter().zip(&sidecars) {
        let caught_up = p.wait_for_host(&r1h, Duration::from_secs(20), |e| e["sync_by_bytes"] == true);
        c.check(caught_up.is_ok(), || format!("{}: r1 catches up: {caught_up:?}", role.name));
    }

    // Many polls later (100 ms apart), each warning has appeared exactly once, and no poll failed.
    let until = Instant::now() + SLACK;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (role, p) in ROLES.iter().zip(&sidecars) {
        for text in [REFUSED, HIDDEN, BLIND] {
            let expected = usize::from(role.warnings.contains(&text));
            c.eq(&format!("{}: lines with {text:?}", role.name), count(p, text), expected);
        }
        let warnings = p.stderr().texts().into_iter().filter(|l| l.starts_with("warning: ")).count();
        c.eq(&format!("{}: warnings in all", role.name), warnings, role.warnings.len());
        let failed = p.stderr().texts().into_iter().filter(|l| l.contains("poll failed")).collect::<Vec<_>>();
        c.eq(&format!("{}: failed polls", role.name), failed, Vec::<String>::new());
        c.check(p.stdout().count(&format!("{mh}: possible dead")) == 0, || {
            format!("{}: the master stayed alive", role.name)
        });
    }
    // The refused query is tried once per connection, not once per poll: one refusal per server.
    for (i, node) in cluster.nodes().iter().enumerate() {
        c.eq(&format!("refusals in {}'s log", node.name()), refusals(node) - log_before[i], 1);
    }
    c.finish();
}

/// How many times the server's log shows the view refused.
fn refusals(node: &pg_status_tests::Node) -> usize {
    let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    log.matches("permission denied for view pg_stat_wal_receiver").count()
}
