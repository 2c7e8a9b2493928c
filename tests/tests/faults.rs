//! Network faults through the proxy, without touching PostgreSQL: a frozen host times out at its deadline
//! while the others keep refreshing, a cut host turns possibly dead then dead quickly, a possibly dead master
//! is still named while there is no other, and a switched proxy moves the master.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{for_proxies, start_ready, Checks, MAX_FAILS, SLACK};
use pg_status_tests::pg::Writer;
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus, Proxy};
use serde_json::json;

const SLEEP_MS: u64 = 100;
const QUERY_TIMEOUT_MS: u64 = 800;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Checks that `path` answers `body` within a second: a transition line is printed just before the new state
/// is published, so a client reacting to the line may see the old answer for a moment, never for long.
fn published(c: &mut Checks, p: &PgStatus, what: &str, path: &str, body: &str) {
    let r = p.wait_for_body(path, body, ms(1000));
    c.check(r.is_ok(), || format!("{what}: {r:?}"));
}

#[test]
fn frozen_and_cut_hosts() {
    let Some(bins) = postgres_or_skip("frozen_and_cut_hosts") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let fm = Proxy::start(m.addr()).expect("proxy to the primary");
    let fr = Proxy::start(r.addr()).expect("proxy to the replica");
    let (mh, rh) = (fm.host(), fr.host());
    let p = start_ready(for_proxies(&[&fm, &fr]).timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&p, "/master", &mh);
    common::settle(&p, "/replica", &rh);
    let out = p.stdout();
    let mut c = Checks::new();
    let writer = Writer::start(m, 10, ms(30), Duration::from_secs(90)).expect("writer");

    // Freeze the replica: its poll hangs until the deadline; meanwhile the master keeps refreshing.
    let mark = out.len();
    let frozen_at = Instant::now();
    fr.freeze();
    let mut master_lsns = BTreeSet::new();
    let possible_line = format!("{rh}: possible dead");
    while out.count_since(mark, &possible_line) == 0 && frozen_at.elapsed() < ms(QUERY_TIMEOUT_MS + SLEEP_MS) + SLACK {
        if let Ok(e) = p.host_entry(&mh) {
            master_lsns.insert(e["lsn"].to_string());
        }
        std::thread::sleep(ms(50));
    }
    let (_, possible) = out.wait_for_line_after(mark, &possible_line, ms(100)).expect("frozen host: possible dead");
    let waited = possible.at.duration_since(frozen_at);
    c.check(waited >= ms(QUERY_TIMEOUT_MS * 7 / 10), || {
        format!("a frozen host fails at its deadline ({QUERY_TIMEOUT_MS} ms), not before: failed after {waited:?}")
    });
    c.check(master_lsns.len() >= 3, || {
        format!("the master kept refreshing while the replica hung: distinct lsn values seen {master_lsns:?}")
    });
    // Possibly dead but the only replica: still preferred over the master fallback.
    let r = p.get("/replica").expect("replica");
    let dead_already = out.count_since(mark, &format!("{rh}: dead")) > 0;
    c.check(r.status == 200 && (r.text() == rh || dead_already), || {
        format!("a possibly dead replica is returned when no healthy one matches: got {r}")
    });
    // Every later poll hangs too: dead at the max_fails-th timeout.
    let (_, dead) = out
        .wait_for_line_after(mark, &format!("{rh}: dead"), ms(MAX_FAILS as u64 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK)
        .expect("frozen host: dead");
    let gap = dead.at.duration_since(possible.at);
    c.check(gap >= ms((MAX_FAILS as u64 - 1) * QUERY_TIMEOUT_MS * 9 / 10), || {
        format!("{} more timeouts between possible dead and dead, got {gap:?}", MAX_FAILS - 1)
    });
    // The line is printed a moment before the state is published: allow that moment.
    published(&mut c, &p, "dead replica: /replica falls back to the master", "/replica", &mh);
    c.eq("dead replica: alive", &p.host_entry(&rh).expect("entry")["alive"], &json!(false));
    c.eq("the master is unaffected", common::plain_200(&p, "/master"), mh.clone());

    // Restore: the replica is back at its next poll.
    let mark = out.len();
    fr.restore();
    out.wait_for_line_after(mark, &format!("{rh}: replica"), ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK)
        .expect("restored replica: replica line");
    p.wait_for_body("/replica", &rh, SLACK).expect("restored replica is returned");

    // Cut the replica: connections are closed and refused, so it fails fast, not at the deadline.
    let mark = out.len();
    let cut_at = Instant::now();
    fr.cut();
    let (_, possible) =
        out.wait_for_line_after(mark, &possible_line, ms(SLEEP_MS) + SLACK).expect("cut host: possible dead");
    let waited = possible.at.duration_since(cut_at);
    c.check(waited < ms(QUERY_TIMEOUT_MS), || format!("a cut host fails without waiting for the deadline: {waited:?}"));
    out.wait_for_line_after(mark, &format!("{rh}: dead"), ms(MAX_FAILS as u64 * SLEEP_MS) + SLACK)
        .expect("cut host: dead");
    published(&mut c, &p, "cut replica: /replica falls back to the master", "/replica", &mh);
    let mark = out.len();
    fr.restore();
    out.wait_for_line_after(mark, &format!("{rh}: replica"), ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK)
        .expect("cut host restored: replica line");

    // Freeze the master: while it is possibly dead and there is no other master, it is still the master;
    // once dead, there is none.
    let mark = out.len();
    fm.freeze();
    out.wait_for_line_after(mark, &format!("{mh}: possible dead"), ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK)
        .expect("frozen master: possible dead");
    let r = p.get("/master").expect("master");
    let dead_already = out.count_since(mark, &format!("{mh}: dead")) > 0;
    c.check(r.status == 200 && r.text() == mh || dead_already, || {
        format!("a possibly dead master is still named while there is no other: got {r}")
    });
    out.wait_for_line_after(mark, &format!("{mh}: dead"), ms(MAX_FAILS as u64 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK)
        .expect("frozen master: dead");
    let r = p.wait_for_response("/master", None, ms(1000), |r| r.status == 404);
    c.check(r.is_ok(), || format!("dead master: /master answers 404 within 1 s of the line: {r:?}"));
    c.eq("dead master, replica alive: /replica", common::plain_200(&p, "/replica"), rh.clone());
    let mark = out.len();
    fm.restore();
    out.wait_for_line_after(mark, &format!("{mh}: master"), ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK)
        .expect("restored master: master line");
    p.wait_for_body("/master", &mh, SLACK).expect("restored master");
    writer.stop();
    c.finish();
}

#[test]
fn switched_proxy_moves_the_master() {
    let Some(bins) = postgres_or_skip("switched_proxy_moves_the_master") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let a = Proxy::start(m.addr()).expect("proxy a");
    let b = Proxy::start(r.addr()).expect("proxy b");
    let (ah, bh) = (a.host(), b.host());
    let p = start_ready(for_proxies(&[&a, &b]).timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&p, "/master", &ah);
    common::settle(&p, "/replica", &bh);
    let out = p.stdout();
    let mark = out.len();
    let switched_at = Instant::now();
    a.switch_to(r.addr());
    b.switch_to(m.addr());
    p.wait_for_body("/master", &bh, ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK).expect("/master follows the switch");
    let took = switched_at.elapsed();
    assert!(took < ms(2 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK, "took {took:?}");
    p.wait_for_body("/replica", &ah, SLACK).expect("/replica follows the switch");
    out.wait_for_line_after(mark, &format!("{bh}: master"), SLACK).expect("b: master line");
    out.wait_for_line_after(mark, &format!("{ah}: replica"), SLACK).expect("a: replica line");
    let hosts = p.hosts().expect("hosts");
    assert_eq!((hosts[0]["master"].clone(), hosts[1]["master"].clone()), (json!(false), json!(true)));
    assert!(m.is_running() && r.is_running(), "no PostgreSQL server was restarted");
}

#[test]
fn a_possibly_dead_replica_is_avoided_while_a_healthy_one_matches() {
    let Some(bins) = postgres_or_skip("a_possibly_dead_replica_is_avoided_while_a_healthy_one_matches") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let p1 = Proxy::start(r1.addr()).expect("proxy");
    let p2 = Proxy::start(r2.addr()).expect("proxy");
    let (mh, h1, h2) = (m.host(), p1.host(), p2.host());
    let timeout_ms = 1500;
    let p = start_ready(
        common::builder()
            .hosts(&[(mh.clone(), m.port()), (h1.clone(), p1.port()), (h2.clone(), p2.port())])
            .timing(SLEEP_MS, timeout_ms, MAX_FAILS),
    );
    for h in [&h1, &h2] {
        p.wait_for_host(h, common::STARTUP, |e| e["alive"] == true && e["lsn"].is_string()).expect("replica polled");
    }
    let out = p.stdout();
    let mut c = Checks::new();
    let mark = out.len();
    p1.freeze();
    out.wait_for_line_after(mark, &format!("{h1}: possible dead"), ms(SLEEP_MS + timeout_ms) + SLACK)
        .expect("possible dead");
    // While possibly dead (until about two more deadlines pass), the healthy replica is preferred ...
    let seen: BTreeSet<String> = (0..6).map(|_| common::plain_200(&p, "/replica")).collect();
    let sync: BTreeSet<String> = (0..4).map(|_| common::plain_200(&p, "/sync_by_time")).collect();
    // ... and the last measurements are kept (DESIGN 1).
    let entry = p.host_entry(&h1).expect("entry");
    let dead_already = out.count_since(mark, &format!("{h1}: dead")) > 0;
    if !dead_already {
        c.eq("possibly dead replica: /replica prefers the healthy one", seen, BTreeSet::from([h2.clone()]));
        c.eq("possibly dead replica: /sync_by_time prefers the healthy one", sync, BTreeSet::from([h2.clone()]));
        c.check(entry["lsn"].is_string() && entry["lag_bytes"].is_u64(), || {
            format!("a possibly dead host keeps its last measurements: {entry}")
        });
    } else {
        c.check(false, || "the window between 'possible dead' and 'dead' was missed (machine too slow)".into());
    }
    out.wait_for_line_after(mark, &format!("{h1}: dead"), ms(MAX_FAILS as u64 * (SLEEP_MS + timeout_ms)) + SLACK)
        .expect("dead");
    let r = p.wait_for_host(&h1, ms(1000), |e| e["lsn"].is_null() && e["alive"] == false);
    c.check(r.is_ok(), || format!("a dead host's measurements are null: {r:?}"));
    let seen: BTreeSet<String> = (0..6).map(|_| common::plain_200(&p, "/replica")).collect();
    c.eq("dead replica is never returned", seen, BTreeSet::from([h2.clone()]));
    p1.restore();
    c.finish();
}

#[test]
fn failover_from_a_hung_master_within_the_bound() {
    let Some(bins) = postgres_or_skip("failover_from_a_hung_master_within_the_bound") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let a = Proxy::start(m.addr()).expect("proxy a");
    let b = Proxy::start(r.addr()).expect("proxy b");
    let (ah, bh) = (a.host(), b.host());
    let p = start_ready(for_proxies(&[&a, &b]).timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&p, "/master", &ah);
    common::settle(&p, "/replica", &bh);
    // The master hangs (t0), then the replica is promoted (t1): /master must name the new master no later
    // than max(t0, t1) + sleep_ms + query_timeout_ms (DESIGN's failover invariant), plus scheduling slack.
    let t0 = Instant::now();
    a.freeze();
    r.promote().expect("promote");
    let t1 = Instant::now();
    let bound = ms(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK;
    p.wait_for_body("/master", &bh, bound).expect("/master names the promoted replica");
    let took = t1.elapsed();
    assert!(took <= bound, "/master followed {took:?} after the promotion ({:?} after the hang)", t0.elapsed());
    // The hung old master is possibly dead by then, and dead after max_fails deadlines.
    let out = p.stdout();
    out.wait_for_line(&format!("{ah}: possible dead"), SLACK).expect("possible dead");
    out.wait_for_line(&format!("{ah}: dead"), ms(MAX_FAILS as u64 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK)
        .expect("dead");
    out.wait_for_line(&format!("{bh}: master"), SLACK).expect("b: master line");
    assert_eq!(common::plain_200(&p, "/master"), bh);
    let r = p.get("/replica").expect("replica");
    assert_eq!((r.status, r.text()), (200, bh.clone()), "no replica left: /replica answers the master");
}
