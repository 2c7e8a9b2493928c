//! The README's HAProxy recipe, run as written (only its addresses changed) with a real HAProxy in front of a
//! real cluster: HAProxy finds nothing to warn about; the write port reaches the master and never a replica;
//! the read port reaches replicas only, and a replica whose replay is paused leaves it; after a failover the
//! write port reaches the new master within a check interval of `/master` naming it.

mod common;
mod tools;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{for_nodes, start_ready, Checks, SLACK};
use pg_status_tests::net::{free_port, next_loopback};
use pg_status_tests::pg::write_rows;
use pg_status_tests::{postgres_or_skip, wait_until_ok, Cluster, ClusterOptions, HaProxy, Node, PgStatus};

const PASSWORD: &str = "postgres";
/// The recipe's check interval.
const INTER: Duration = Duration::from_secs(1);
/// Byte lag up to which a replica is in sync here: small, so a paused replica leaves the read port quickly.
const SYNC_MAX_LAG_BYTES: u64 = 100_000;

/// The README's HAProxy configuration block.
fn recipe() -> String {
    let readme = tools::read("README.md");
    let section = &readme[readme.find("### HAProxy").expect("README has an HAProxy section")..];
    let start = section.find("```haproxy\n").expect("an haproxy block in the HAProxy section") + "```haproxy\n".len();
    let end = section[start..].find("```").expect("the haproxy block ends") + start;
    section[start..end].to_owned()
}

/// The recipe with the test's addresses: `dbN` are `nodes`, pg-status listens at `sidecar`.
fn localised(recipe: &str, nodes: &[&Node], sidecar: SocketAddr, write: SocketAddr, read: SocketAddr) -> String {
    let mut cfg = recipe
        .replace("addr 127.0.0.1 port 8000", &format!("addr {} port {}", sidecar.ip(), sidecar.port()))
        .replace("bind :5000", &format!("bind {write}"))
        .replace("bind :5001", &format!("bind {read}"));
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("db{}", i + 1);
        cfg = cfg.replace(&format!("server {name} {name}:5432"), &format!("server {} {}", n.host(), n.addr()));
    }
    assert!(!cfg.contains("db1") && !cfg.contains(":8000"), "every address of the recipe was replaced:\n{cfg}");
    cfg
}

/// Which server a new session through `port` reached: its PostgreSQL port, and whether it is in recovery.
fn reach(port: SocketAddr) -> Result<(u16, bool), String> {
    let mut config = postgres::Config::new();
    config
        .host(&port.ip().to_string())
        .port(port.port())
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let mut client = config.connect(postgres::NoTls).map_err(|e| format!("connect through {port}: {e}"))?;
    let row = client
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .map_err(|e| format!("query through {port}: {e}"))?;
    let server_port: i32 = row.get(0);
    Ok((u16::try_from(server_port).unwrap_or(0), row.get(1)))
}

fn dump(p: &PgStatus, h: &HaProxy) -> String {
    format!("/hosts: {:?}{}{}", p.hosts().ok(), h.log_tail(3000), p.output_dump())
}

#[test]
fn the_readme_haproxy_recipe_follows_the_master_and_keeps_reads_on_synchronous_replicas() {
    let test = "the_readme_haproxy_recipe_follows_the_master_and_keeps_reads_on_synchronous_replicas";
    let Some(bins) = postgres_or_skip(test) else { return };
    let Some(()) = tools::require(test, &["haproxy"]) else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let p = start_ready(for_nodes(&[m, r1, r2]).env("pg_status__sync_max_lag_bytes", SYNC_MAX_LAG_BYTES));
    common::settle(&p, "/master", &m.host());
    let ip = next_loopback();
    let write = SocketAddr::from((ip, free_port(ip).expect("port")));
    let read = SocketAddr::from((ip, free_port(ip).expect("port")));
    let mut h = HaProxy::start(&localised(&recipe(), &[m, r1, r2], p.addr(), write, read)).expect("HAProxy starts");
    let mut c = Checks::new();
    c.eq("HAProxy's warnings about the recipe", h.warnings().to_vec(), Vec::<String>::new());

    // The write port leads to the master once HAProxy's first checks are in (until then HAProxy counts every
    // server as up: the README says so).
    let first = wait_until_ok(2 * INTER + SLACK, "the write port to reach only the master", || {
        let seen: Vec<Result<(u16, bool), String>> = (0..6).map(|_| reach(write)).collect();
        if seen.iter().all(|r| r == &Ok((m.port(), false))) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert!(first.is_ok(), "{first:?}\n{}", dump(&p, &h));
    for _ in 0..5 {
        c.eq("a write session reaches the master", reach(write), Ok((m.port(), false)));
    }
    // The read port leads to replicas only (their checks need two good answers first).
    let replicas = [r1.port(), r2.port()];
    let on_replica = wait_until_ok(Duration::from_secs(10), "the read port to reach a replica", || {
        reach(read).and_then(|r| if r.1 { Ok(r) } else { Err(format!("reached {r:?}")) })
    });
    assert!(on_replica.is_ok(), "{on_replica:?}\n{}", dump(&p, &h));
    for _ in 0..6 {
        let r = reach(read);
        c.check(matches!(r, Ok((port, true)) if replicas.contains(&port)), || format!("a read session: {r:?}"));
    }

    // r1 stops replaying while the master writes: it falls out of sync in bytes and leaves the read port.
    r1.pause_replay().expect("pause r1");
    write_rows(m, 2_000).expect("writes");
    let late = p.wait_for_host(&r1.host(), Duration::from_secs(20), |e| e["sync_by_bytes"] == false);
    assert!(late.is_ok(), "r1 out of sync: {late:?}\n{}", dump(&p, &h));
    r2.wait_replayed(m.current_wal_lsn().expect("lsn"), Duration::from_secs(20)).expect("r2 replays");
    // fall 2 at inter 1s: gone after two checks; then every read session reaches r2.
    let only_r2 = wait_until_ok(3 * INTER + SLACK, "reads to leave the paused replica", || {
        let seen: Vec<Result<(u16, bool), String>> = (0..6).map(|_| reach(read)).collect();
        if seen.iter().all(|r| r == &Ok((r2.port(), true))) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    c.check(only_r2.is_ok(), || format!("the paused replica leaves the read port: {only_r2:?}\n{}", dump(&p, &h)));
    r1.resume_replay().expect("resume r1");

    // Failover: the master stops and r1 is promoted. The write port reaches r1 within a check interval of
    // /master naming it, and never reaches a server in recovery meanwhile.
    m.stop().expect("stop the master");
    let promoted = Instant::now();
    r1.promote().expect("promote r1");
    p.wait_for_body("/master", &r1.host(), Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", dump(&p, &h)));
    let named = promoted.elapsed();
    let mut in_recovery = Vec::new();
    let reached = wait_until_ok(Duration::from_secs(20), "the write port to reach the new master", || {
        let r = reach(write);
        if let Ok((port, true)) = r {
            in_recovery.push(port);
        }
        r.and_then(|r| if r == (r1.port(), false) { Ok(()) } else { Err(format!("reached {r:?}")) })
    });
    let through_haproxy = promoted.elapsed();
    let after_named = through_haproxy.saturating_sub(named);
    assert!(reached.is_ok(), "{reached:?}\n{}", dump(&p, &h));
    eprintln!(
        "failover: from the promotion, /master named the new master after {named:?} and the write port \
         reached it after {through_haproxy:?} ({after_named:?} later)"
    );
    c.check(through_haproxy <= named + INTER + SLACK, || {
        format!("the write port reached the new master {through_haproxy:?} after the promotion, /master named it after {named:?}")
    });
    c.eq("write sessions that reached a server in recovery", in_recovery, Vec::<u16>::new());
    for _ in 0..5 {
        c.eq("a write session after the failover", reach(write), Ok((r1.port(), false)));
    }
    c.check(h.is_running(), || format!("HAProxy still runs{}", h.log_tail(2000)));
    c.finish();
}
