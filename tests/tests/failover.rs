//! Failover with real servers: the primary stops, becomes possibly dead then dead after `max_fails`, a
//! replica is promoted and `/master` follows within a poll; the old primary restarts as a second master and
//! the first in host order wins; a possibly dead master yields at once to another master. The transition
//! lines appear on stdout, each once.

mod common;

use std::time::{Duration, Instant};

use common::{for_nodes, start_ready, Checks, MAX_FAILS, SLACK};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions};
use serde_json::json;

const SLEEP_MS: u64 = 200;
/// `pg_status__fast_sleep_ms` at its default.
const FAST_SLEEP_MS: u64 = 100;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const QUERY_TIMEOUT_MS: u64 = 1000;

#[test]
fn failover_promotion_death_revival_and_split_brain() {
    let Some(bins) = postgres_or_skip("failover_promotion_death_revival_and_split_brain") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    let p = start_ready(for_nodes(&[m, r1, r2]).timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&p, "/master", &mh);
    let out = p.stdout();
    let mut c = Checks::new();

    // The primary stops: possibly dead at its first failed poll, dead at the max_fails-th.
    let mark = out.len();
    m.stop().expect("stop primary");
    let (i_possible, possible) = out
        .wait_for_line_after(mark, &format!("{mh}: possible dead"), Duration::from_millis(SLEEP_MS) + SLACK)
        .expect("possible dead line");
    let max_dead = Duration::from_millis(MAX_FAILS as u64 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK;
    let (i_dead, dead) = out.wait_for_line_after(mark, &format!("{mh}: dead"), max_dead).expect("dead line");
    c.check(i_possible < i_dead, || "'possible dead' comes before 'dead'".into());
    // max_fails - 1 more failed polls, each at least a fast interval (pg_status__fast_sleep_ms, 100 ms by
    // default) after the previous one ended: the master's stop started a failover episode.
    let min_gap = Duration::from_millis((MAX_FAILS as u64 - 1) * FAST_SLEEP_MS.min(SLEEP_MS) * 9 / 10);
    c.check(dead.at.duration_since(possible.at) >= min_gap, || {
        format!("dead only at the {MAX_FAILS}th failure: {:?} after possible dead, want >= {min_gap:?}", {
            dead.at.duration_since(possible.at)
        })
    });
    c.eq("one 'possible dead' line", out.count_since(mark, &format!("{mh}: possible dead")), 1);
    c.eq("one 'dead' line", out.count_since(mark, &format!("{mh}: dead")), 1);

    // Dead: no master (the replicas are still replicas), null fields, never returned. The answer may trail the
    // line by a moment (the line is printed before the new state is published), never by much.
    let published = p.wait_for_response("/master", None, ms(1000), |r| r.status == 404);
    c.check(published.is_ok(), || {
        format!(
            "after '{mh}: dead' /master stops naming it within 1 s: {published:?}; /hosts: {:?}; stdout: {:?}",
            p.hosts().ok(),
            out.texts()
        )
    });
    let r = p.get("/master").expect("master");
    c.eq("/master with the only master dead: status", r.status, 404);
    c.eq("/master with the only master dead: body", r.text(), String::new());
    let r = p.get_json("/master").expect("master");
    c.eq(
        "/master json with no master",
        (r.status, r.json().ok()),
        (404, Some(json!({ "host": null, "dc": null, "geo": null, "port": null }))),
    );
    let e = p.host_entry(&mh).expect("entry");
    c.eq("dead master alive", &e["alive"], &json!(false));
    c.eq("dead master lag_ms", &e["lag_ms"], &json!(null));
    c.eq("dead master lsn", &e["lsn"], &json!(null));
    let st = p.get(&format!("/status?host={mh}")).expect("status");
    c.eq("/status of the dead master", st.json().ok().map(|v| v["alive"].clone()), Some(json!(false)));

    // Promote r1: /master follows within sleep_ms + one poll (plus slack).
    let mark = out.len();
    r1.promote().expect("promote r1");
    let t1 = Instant::now();
    p.wait_for_body("/master", &r1h, Duration::from_millis(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK)
        .expect("/master names the promoted replica");
    let took = t1.elapsed();
    c.check(took <= Duration::from_millis(SLEEP_MS + QUERY_TIMEOUT_MS) + SLACK, || format!("/master took {took:?}"));
    out.wait_for_line_after(mark, &format!("{r1h}: master"), SLACK).expect("'r1: master' line");
    c.eq("/replica after the promotion", common::plain_200(&p, "/replica"), r2h.clone());
    c.eq("/replica after the promotion", common::plain_200(&p, "/replica"), r2h.clone());
    let e = p.host_entry(&r1h).expect("entry");
    c.eq("promoted entry master", &e["master"], &json!(true));

    // The old primary restarts as a master too: split brain, the first in host order wins.
    let mark = out.len();
    m.start().expect("restart old primary");
    out.wait_for_line_after(mark, &format!("{mh}: master"), Duration::from_millis(SLEEP_MS) + SLACK)
        .expect("'old primary: master' line on revival");
    p.wait_for_body("/master", &mh, SLACK).expect("first master in host order wins");
    let e = p.host_entry(&mh).expect("entry");
    c.eq("revived entry alive", &e["alive"], &json!(true));
    c.eq("revived entry master", &e["master"], &json!(true));
    c.eq("r1 still master", &p.host_entry(&r1h).expect("entry")["master"], &json!(true));

    // Another pg-status listing r1 first picks r1: host order decides, not history.
    let q = start_ready(for_nodes(&[r1, m, r2]).timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&q, "/master", &r1h);
    drop(q);

    // The first master crashes: as soon as it is possibly dead, /master switches to the other master.
    let mark = out.len();
    m.kill().expect("kill old primary");
    out.wait_for_line_after(mark, &format!("{mh}: possible dead"), Duration::from_millis(SLEEP_MS) + SLACK)
        .expect("possible dead line");
    // Poll until the dead line: the switch must happen while the old master is only possibly dead (the line
    // and the published answer may be a moment apart).
    let dead_line = format!("{mh}: dead");
    let mut answers = Vec::new();
    let switched = loop {
        let dead_seen = out.count_since(mark, &dead_line) > 0;
        let r = p.get("/master").expect("master");
        let body = r.text();
        if r.status == 200 && body == r1h {
            break !dead_seen;
        }
        answers.push(format!("{r}"));
        if dead_seen {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    c.check(switched, || {
        format!("a possibly dead master yields to the healthy one before it is dead; answers meanwhile: {answers:?}")
    });
    out.wait_for_line_after(mark, &format!("{mh}: dead"), max_dead).expect("dead line");
    c.eq("/master after the crash", common::plain_200(&p, "/master"), r1h.clone());
    c.finish();
}
