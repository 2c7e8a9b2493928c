//! Upstream 2.2 parity against real PostgreSQL: locality-aware replica choice configured as upstream names
//! it, and an upstream-style environment (listen address `*` included) that starts pg-status unchanged.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::*;
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus};

/// The distinct plain answers of `n` requests to `path`, each asserted to be 200.
fn answers(p: &PgStatus, path: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|_| plain_200(p, path)).collect()
}

fn one(s: &str) -> BTreeSet<String> {
    BTreeSet::from([s.to_owned()])
}

#[test]
fn locality_prefers_replicas_in_this_instances_data_centre() {
    let Some(bins) = postgres_or_skip("locality_prefers_replicas_in_this_instances_data_centre") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (r1h, r2h) = (r1.host(), r2.host());
    cluster.wait_caught_up(STARTUP).expect("caught up");

    // Direct value: this instance is in dc1, where only r2 is.
    let p = start_ready(
        for_nodes(&[m, r1, r2])
            .env("pg_status__hosts_dc", "dc1,dc2,dc1")
            .env("pg_status__hosts_geo", "eu,eu,eu")
            .env("pg_status__current_dc", "dc1")
            .env("pg_status__current_geo", "eu"),
    );
    p.wait_for_host(&r2h, STARTUP, |e| e["alive"] == true).expect("r2 polled");
    p.wait_for_host(&r1h, STARTUP, |e| e["alive"] == true).expect("r1 polled");
    assert_eq!(answers(&p, "/replica", 6), one(&r2h), "round robin stays in the local data centre");
    assert_eq!(answers(&p, "/sync_by_time", 4), one(&r2h));
    let hosts = p.hosts().expect("/hosts");
    let dcs: Vec<&str> = hosts.iter().map(|h| h["dc"].as_str().unwrap_or("null")).collect();
    assert_eq!(dcs, ["dc1", "dc2", "dc1"], "/hosts shows each host's data centre");
    assert_eq!(hosts[1]["geo"], "eu");
    // The local replica stops replaying: a min_lsn it has not reached sends the request to the remote one.
    r2.pause_replay().expect("pause r2");
    m.execute("CREATE TABLE locality_probe (id int)").expect("write");
    let lsn = m.value("SELECT pg_current_wal_lsn()").expect("lsn").expect("an lsn");
    r1.wait_replayed(pg_status_tests::pg::parse_lsn(&lsn).expect("lsn parses"), STARTUP).expect("r1 replays");
    p.wait_for_host(&r1h, STARTUP, |e| {
        e["lsn"].as_str().and_then(pg_status_tests::pg::parse_lsn) >= pg_status_tests::pg::parse_lsn(&lsn)
    })
    .expect("pg-status sees r1 caught up");
    assert_eq!(answers(&p, &format!("/replica?min_lsn={lsn}"), 4), one(&r1h), "filters come before locality");
    r2.resume_replay().expect("resume r2");
    drop(p);

    // Indirect value through another variable, as upstream's *_env settings do.
    let p = start_ready(
        for_nodes(&[m, r1, r2])
            .env("pg_status__hosts_dc", "dc1,dc2,dc1")
            .env("pg_status__current_dc_env", "MY_DATA_CENTRE")
            .env("MY_DATA_CENTRE", "dc2"),
    );
    p.wait_for_host(&r1h, STARTUP, |e| e["alive"] == true).expect("r1 polled");
    assert_eq!(answers(&p, "/replica", 6), one(&r1h));
    drop(p);

    // An incomplete list turns locality off with a warning; round robin covers every replica.
    let p =
        start_ready(for_nodes(&[m, r1, r2]).env("pg_status__hosts_dc", "dc1,dc2").env("pg_status__current_dc", "dc1"));
    p.stderr()
        .wait_for_contains("locality by dc is off", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.output_dump()));
    p.wait_for_host(&r1h, STARTUP, |e| e["alive"] == true).expect("r1 polled");
    p.wait_for_host(&r2h, STARTUP, |e| e["alive"] == true).expect("r2 polled");
    assert_eq!(answers(&p, "/replica", 6), BTreeSet::from([r1h.clone(), r2h.clone()]));
}

#[test]
fn an_upstream_configuration_starts_unchanged_and_listens_on_every_address() {
    let Some(bins) = postgres_or_skip("an_upstream_configuration_starts_unchanged_and_listens_on_every_address") else {
        return;
    };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    // Every setting an upstream 2.2 deployment may carry, under its upstream name.
    let p = start_ready(
        for_nodes(&[m, r])
            .without("pg_status__http_host")
            .env("pg_status__http_listen_address", "*")
            .env("pg_status__pg_user", "postgres")
            .env("pg_status__pg_password", "postgres")
            .env("pg_status__pg_database", "postgres")
            .env("pg_status__connect_timeout", 2)
            .env("pg_status__conn_max_age_ms", 300_000)
            .env("pg_status__sync_max_lag_ms", 1000)
            .env("pg_status__sync_max_lag_bytes", 1_000_000)
            .env("pg_status__hosts_dc", "a,b")
            .env("pg_status__hosts_geo", "x,x")
            .env("pg_status__current_dc_env", "NODE_DC")
            .env("NODE_DC", "a")
            .env("pg_status__current_geo", "x")
            .env("pg_status__log_level", "info"),
    );
    settle(&p, "/master", &m.host());
    let warnings: Vec<String> = p.stderr().texts().into_iter().filter(|l| l.starts_with("warning")).collect();
    assert!(warnings.is_empty(), "an upstream configuration draws no warnings: {warnings:?}");
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, p.addr().port()));
    let r6 = pg_status_tests::http::get(v6, "/master", None).expect("GET over IPv6");
    assert_eq!((r6.status, r6.text()), (200, m.host()), "'*' listens on IPv6 too");
}
