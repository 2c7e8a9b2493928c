//! Real replication lag: replay paused with `pg_wal_replay_pause()` while the primary writes shows in
//! `/hosts`, the sync flags, the transition lines and every lag-filtered route; an idle primary does not make
//! caught-up replicas late; and `min_lsn` gives read-your-writes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{for_nodes, start_ready, Checks, SLACK, STARTUP};
use pg_status_reference::routes::REPLICA_ROUTES;
use pg_status_tests::pg::{create_load_table, format_lsn, parse_lsn, Writer};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus};
use serde_json::json;

const SYNC_MS: u64 = 1000;
const SYNC_BYTES: u64 = 100_000;

/// The set of hosts `n` plain requests to `path` return (status 200 only; others are recorded as `<status>`).
fn hosts_seen(p: &PgStatus, path: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let r = p.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
            if r.status == 200 {
                r.text()
            } else {
                format!("<{}>", r.status)
            }
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn paused_replay_shows_in_hosts_flags_routes_and_log() {
    let Some(bins) = postgres_or_skip("paused_replay_shows_in_hosts_flags_routes_and_log") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    create_load_table(m).expect("table");
    cluster.wait_caught_up(STARTUP).expect("caught up");
    let p = start_ready(
        for_nodes(&[m, r1, r2])
            .env("pg_status__sync_max_lag_ms", SYNC_MS)
            .env("pg_status__sync_max_lag_bytes", SYNC_BYTES),
    );
    for h in [&r1h, &r2h] {
        p.wait_for_host(h, STARTUP, |e| e["sync_by_time"] == true && e["sync_by_bytes"] == true).expect("in sync");
    }
    let mark = p.stdout().len();

    // Pause r1 and write steadily on the primary: r1 falls behind in bytes and then in time.
    r1.pause_replay().expect("pause r1");
    let writer = Writer::start(m, 200, Duration::from_millis(50), Duration::from_secs(60)).expect("writer");
    let late = p
        .wait_for_host(&r1h, Duration::from_secs(20), |e| {
            e["sync_by_bytes"] == false
                && e["sync_by_time"] == false
                && e["lag_bytes"].as_u64().is_some_and(|b| b > SYNC_BYTES)
                && e["lag_ms"].as_u64().is_some_and(|ms| ms > SYNC_MS)
        })
        .expect("r1 out of sync in bytes and time");
    assert_eq!(late["alive"], true, "a lagging replica is alive: {late}");
    assert_eq!(late["master"], false);
    // Its lsn is its replay position, behind the master's.
    let r1_lsn = late["lsn"].as_str().and_then(parse_lsn).expect("r1 lsn");
    assert!(r1_lsn <= r1.replay_lsn().expect("replay").expect("some"), "lsn is the replay position");
    assert!(r1_lsn < m.current_wal_lsn().expect("master lsn"));
    p.stdout().wait_for_line_after(mark, &format!("{r1h}: out of sync in bytes"), SLACK).expect("bytes line");
    p.stdout().wait_for_line_after(mark, &format!("{r1h}: out of sync in time"), SLACK).expect("time line");

    let mut c = Checks::new();
    let r2_entry = p.host_entry(&r2h).expect("r2");
    c.eq("r2 stays synchronous in bytes", &r2_entry["sync_by_bytes"], &json!(true));
    c.eq("r2 stays synchronous in time", &r2_entry["sync_by_time"], &json!(true));

    // Lag-filtered routes avoid r1; unfiltered ones still use it; overridden thresholds admit it again.
    for path in [
        "/sync_by_time",
        "/sync_by_bytes",
        "/sync_by_time_or_bytes",
        "/sync_by_time_and_bytes",
        "/most_sync_by_bytes",
        "/replica?lag_bytes=100000",
        "/replica?lag_ms=1000",
        "/replica?lag_ms=1000&lag_bytes=100000",
        "/sync_by_bytes?lag_ms=999999999",
        "/sync_by_time?lag_bytes=999999999999",
    ] {
        c.eq(path, hosts_seen(&p, path, 6), set(&[&r2h]));
    }
    for path in [
        "/replica",
        "/replica?lag_ms=999999999",
        "/replica?lag_bytes=999999999999",
        "/sync_by_bytes?lag_bytes=999999999999",
        "/sync_by_time?lag_ms=999999999",
        "/sync_by_time_or_bytes?lag_ms=999999999",
        "/sync_by_time_or_bytes?lag_bytes=999999999999",
        "/sync_by_time_and_bytes?lag_ms=999999999&lag_bytes=999999999999",
    ] {
        c.eq(path, hosts_seen(&p, path, 6), set(&[&r1h, &r2h]));
    }
    // Smallest lag_bytes among those within the thresholds: r2, even with generous thresholds.
    c.eq(
        "/most_sync_by_bytes?lag_ms=999999999&lag_bytes=999999999999",
        hosts_seen(&p, "/most_sync_by_bytes?lag_ms=999999999&lag_bytes=999999999999", 4),
        set(&[&r2h]),
    );
    let r = p.get_json("/sync_by_bytes").expect("json");
    c.eq(
        "/sync_by_bytes json",
        r.json().ok(),
        Some(json!({ "host": r2h, "dc": null, "geo": null, "port": r2.port() })),
    );

    // Pause r2 as well: no replica is synchronous, so the filtered routes answer with the master.
    r2.pause_replay().expect("pause r2");
    p.wait_for_host(&r2h, Duration::from_secs(20), |e| e["sync_by_bytes"] == false && e["sync_by_time"] == false)
        .expect("r2 out of sync");
    for path in [
        "/sync_by_time",
        "/sync_by_bytes",
        "/sync_by_time_or_bytes",
        "/sync_by_time_and_bytes",
        "/most_sync_by_bytes",
        "/replica?lag_bytes=100000",
        "/replica?lag_ms=1000",
    ] {
        c.eq(&format!("{path} with both replicas late"), hosts_seen(&p, path, 3), set(&[&mh]));
    }
    let r = p.get_json("/sync_by_time").expect("json");
    c.eq(
        "/sync_by_time json falls back to master",
        r.json().ok(),
        Some(json!({ "host": mh, "dc": null, "geo": null, "port": m.port() })),
    );
    c.eq("/replica without limits still uses late replicas", hosts_seen(&p, "/replica", 4), set(&[&r1h, &r2h]));

    // Each transition is printed once, not on every poll.
    let r1_lines: Vec<String> = p.stdout().texts().into_iter().filter(|l| l.starts_with(&format!("{r1h}:"))).collect();
    for what in ["out of sync in bytes", "out of sync in time"] {
        let n = p.stdout().count_since(mark, &format!("{r1h}: {what}"));
        c.check(n == 1, || format!("one '{r1h}: {what}' line while r1 is paused, got {n}; r1's lines: {r1_lines:?}"));
    }

    // Resume both and stop writing: both catch up and are synchronous again.
    writer.stop();
    let resume_mark = p.stdout().len();
    r1.resume_replay().expect("resume r1");
    r2.resume_replay().expect("resume r2");
    cluster.wait_caught_up(Duration::from_secs(30)).expect("caught up");
    for h in [&r1h, &r2h] {
        p.wait_for_host(h, Duration::from_secs(10), |e| {
            e["sync_by_bytes"] == true && e["sync_by_time"] == true && e["lag_bytes"] == 0 && e["lag_ms"] == 0
        })
        .expect("in sync again");
        p.stdout().wait_for_line_after(resume_mark, &format!("{h}: synchronous in bytes"), SLACK).expect("line");
        p.stdout().wait_for_line_after(resume_mark, &format!("{h}: synchronous in time"), SLACK).expect("line");
    }

    c.finish();
}

/// Asserts over `window` that neither replica is reported late in time, by /hosts samples and by the
/// transition lines; returns the primary's WAL positions before and after, for the message.
fn never_late(c: &mut Checks, p: &PgStatus, replicas: &[&str], window: Duration, phase: &str) {
    let mark = p.stdout().len();
    let start = Instant::now();
    while start.elapsed() < window {
        for h in replicas {
            let e = p.host_entry(h).expect("entry");
            c.check(e["sync_by_time"] == true && e["lag_ms"].as_u64().is_some_and(|ms| ms <= SYNC_MS), || {
                format!("{phase}: caught-up replica {h} reported late after {:?}: {e}", start.elapsed())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines: Vec<String> = p
        .stdout()
        .lines()
        .into_iter()
        .skip(mark)
        .map(|l| format!("+{:?} {}", l.at.saturating_duration_since(start), l.text))
        .collect();
    for h in replicas {
        let n = p.stdout().count_since(mark, &format!("{h}: out of sync in time"));
        c.check(n == 0, || format!("{phase}: '{h}: out of sync in time' printed {n} times; lines: {lines:?}"));
    }
}

/// An idle primary still writes a little WAL on its own (the background writer's standby snapshot every 15 s,
/// checkpoints): that must not make replicas that replay it within milliseconds look late, even though their
/// last replayed transaction is old.
#[test]
fn idle_primary_does_not_make_caught_up_replicas_late() {
    let Some(bins) = postgres_or_skip("idle_primary_does_not_make_caught_up_replicas_late") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (r1h, r2h) = (r1.host(), r2.host());
    create_load_table(m).expect("table");
    pg_status_tests::pg::write_rows(m, 100).expect("write");
    cluster.wait_caught_up(STARTUP).expect("caught up");
    let p = start_ready(for_nodes(&[m, r1, r2]).env("pg_status__sync_max_lag_ms", SYNC_MS));
    for h in [&r1h, &r2h] {
        p.wait_for_host(h, STARTUP, |e| e["lag_bytes"] == 0 && e["sync_by_time"] == true).expect("caught up");
    }
    let mut c = Checks::new();
    // No client writes: the last transaction grows older than sync_max_lag_ms.
    let before = m.current_wal_lsn().expect("lsn");
    never_late(&mut c, &p, &[&r1h, &r2h], Duration::from_millis(2 * SYNC_MS), "idle");
    // WAL without a transaction, as the server writes by itself when idle: a checkpoint record.
    for i in 1..=5 {
        m.execute("CHECKPOINT").expect("checkpoint");
        never_late(&mut c, &p, &[&r1h, &r2h], Duration::from_millis(400), &format!("idle, after CHECKPOINT #{i}"));
    }
    let after = m.current_wal_lsn().expect("lsn");
    c.check(after > before, || "the checkpoint wrote WAL".into());
    c.eq("idle: /sync_by_time uses both replicas", hosts_seen(&p, "/sync_by_time", 4), set(&[&r1h, &r2h]));
    c.finish();
}

#[test]
fn min_lsn_gives_read_your_writes() {
    let Some(bins) = postgres_or_skip("min_lsn_gives_read_your_writes") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    m.execute("CREATE TABLE ryw (id int PRIMARY KEY)").expect("table");
    cluster.wait_caught_up(STARTUP).expect("caught up");
    let p = start_ready(for_nodes(&[m, r1, r2]));
    common::settle(&p, "/master", &mh);
    p.wait_for_host(&r2h, STARTUP, |e| e["alive"] == true && e["lsn"].is_string()).expect("r2 polled");
    // r1 stops replaying: it must never be returned for a position it has not replayed.
    r1.pause_replay().expect("pause r1");
    let nodes = [m, r1, r2];
    let routes = REPLICA_ROUTES;
    let mut replica_answers = 0;
    for i in 0..40 {
        m.execute(&format!("INSERT INTO ryw VALUES ({i})")).expect("insert");
        let lsn = m.value("SELECT pg_current_wal_lsn()").expect("lsn").expect("some lsn");
        let route = routes[i as usize % routes.len()];
        // Ask at once (likely the master), then again until a replica has caught up (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let path = format!("{route}?min_lsn={lsn}");
            let r = p.get(&path).expect("request");
            assert_eq!(r.status, 200, "GET {path}: {r}");
            let host = r.text();
            assert_ne!(host, r1h, "GET {path} returned the paused replica");
            let node = nodes.iter().find(|n| n.host() == host).unwrap_or_else(|| panic!("unknown host {host}"));
            let visible = node.value(&format!("SELECT count(*) FROM ryw WHERE id = {i}")).expect("read");
            assert_eq!(visible.as_deref(), Some("1"), "row {i} (written at {lsn}) not visible on {host} from {path}");
            if host == r2h {
                replica_answers += 1;
                break;
            }
            assert_eq!(host, mh);
            if Instant::now() > deadline {
                panic!("GET {path} never returned the caught-up replica {r2h} within 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(replica_answers, 40);
    // A position r1 has replayed admits it again (r1 and r2 both qualify).
    let r1_replayed = format_lsn(r1.replay_lsn().expect("replay").expect("some"));
    let seen = hosts_seen(&p, &format!("/replica?min_lsn={r1_replayed}"), 6);
    assert_eq!(seen, set(&[&r1h, &r2h]), "/replica?min_lsn={r1_replayed}");
    r1.resume_replay().expect("resume");
}
