//! Split brain and read-your-writes waits with real servers.
//!
//! Split brain: the primary is partitioned away from pg-status (its proxy is cut, the server keeps running),
//! the replica is promoted onto timeline 2, and the partition heals, so both hosts claim to be master. Under
//! `pg_status__split_brain=host_order` the first master in host order (the stale old primary) keeps winning,
//! as upstream does; under `timeline` the promoted host wins; under `refuse` nobody does, and `/master` answers
//! 503 naming both. All policies print the same transition lines
//! and show each host's timeline in `/hosts`; when the old primary stops, the split brain ends.
//!
//! Waits: with a 1 s polling interval and 100 writes/s, a fresh `min_lsn` almost never finds a replica in
//! pg-status's view, so `/replica?min_lsn=` falls back to the master; `wait_ms=50` lets pg-status poll the
//! replicas at once and answer with one that has replayed the write. Every answer is checked to contain the
//! write (read-your-writes), the share of replica answers is measured both ways and printed.
//!
//! Timelines and `min_lsn`: a replica is promoted while another keeps following the still-writing old primary,
//! whose WAL carries the follower's position past a write made on the new master. Under `host_order` the
//! follower qualifies for that write's `min_lsn` by its position (upstream's comparison); under `timeline` it
//! does not, since it shows another timeline than the master's, and the master answers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{for_nodes, for_proxies, start_ready, Checks, MAX_FAILS, QUERY_TIMEOUT_MS, SLACK, SLEEP_MS};
use pg_status_tests::pg::format_lsn;
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus, Proxy};
use serde_json::json;

/// How long a transition may take: `max_fails` failed polls plus slack.
fn transition() -> Duration {
    Duration::from_millis(MAX_FAILS as u64 * (SLEEP_MS + QUERY_TIMEOUT_MS)) + SLACK * 2
}

fn dump(p: &PgStatus) -> String {
    format!("/hosts: {:?}\n{}", p.hosts().ok(), p.output_dump())
}

#[test]
fn split_brain_under_each_policy() {
    let Some(bins) = postgres_or_skip("split_brain_under_each_policy") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let pm = Proxy::start(m.addr()).expect("proxy to the primary");
    let pr = Proxy::start(r.addr()).expect("proxy to the replica");
    let (old, new) = (pm.host(), pr.host());
    let policies = ["host_order", "timeline", "refuse"];
    let sidecars: Vec<PgStatus> = policies
        .iter()
        .map(|policy| start_ready(for_proxies(&[&pm, &pr]).env("pg_status__split_brain", policy)))
        .collect();
    let mut c = Checks::new();
    for (policy, p) in policies.iter().zip(&sidecars) {
        common::settle(p, "/master", &old);
        let e = p
            .wait_for_host(&new, SLACK, |e| e["timeline"] == json!(1))
            .unwrap_or_else(|e| panic!("{policy}: {e}\n{}", dump(p)));
        c.eq(&format!("{policy}: replica timeline before the promotion"), &e["timeline"], &json!(1));
        c.eq(
            &format!("{policy}: primary timeline before the promotion"),
            &p.host_entry(&old).unwrap()["timeline"],
            &json!(1),
        );
    }

    // Partition the old primary (it keeps running and keeps claiming master), promote the replica.
    let marks: Vec<usize> = sidecars.iter().map(|p| p.stdout().len()).collect();
    pm.cut();
    for (p, mark) in sidecars.iter().zip(&marks) {
        p.stdout()
            .wait_for_line_after(*mark, &format!("{old}: dead"), transition())
            .unwrap_or_else(|e| panic!("{e}\n{}", dump(p)));
    }
    r.promote().expect("promote the replica");
    for (policy, p) in policies.iter().zip(&sidecars) {
        p.wait_for_body("/master", &new, transition()).unwrap_or_else(|e| panic!("{policy}: {e}\n{}", dump(p)));
        p.wait_for_host(&new, transition(), |e| e["timeline"] == json!(2))
            .unwrap_or_else(|e| panic!("{policy}: promoted host on timeline 2: {e}\n{}", dump(p)));
    }
    c.eq(
        "no split brain while partitioned",
        sidecars.iter().map(|p| p.stdout().count("split brain ended")).sum::<usize>(),
        0,
    );

    // The partition heals: two masters.
    let marks: Vec<usize> = sidecars.iter().map(|p| p.stdout().len()).collect();
    pm.restore();
    let line = format!("split brain: {old}, {new}");
    for ((policy, p), mark) in policies.iter().zip(&sidecars).zip(&marks) {
        let seen = p.stdout().wait_for_line_after(*mark, &line, transition());
        c.check(seen.is_ok(), || format!("{policy}: {line:?} printed: {seen:?}"));
        let e = p.wait_for_host(&old, SLACK, |e| e["alive"] == json!(true) && e["master"] == json!(true));
        c.check(e.is_ok(), || format!("{policy}: the old primary is an alive master again: {e:?}"));
        if let Ok(e) = e {
            c.eq(&format!("{policy}: old primary timeline"), &e["timeline"], &json!(1));
        }
        let e = p.host_entry(&new).expect("entry");
        c.eq(&format!("{policy}: promoted host timeline"), &e["timeline"], &json!(2));
        c.eq(&format!("{policy}: promoted host master"), &e["master"], &json!(true));
        let st = p.get_json(&format!("/status?host={old}")).expect("status").json().ok();
        c.eq(
            &format!("{policy}: /status timeline of the old primary"),
            st.map(|v| v["timeline"].clone()),
            Some(json!(1)),
        );
        if *policy == "refuse" {
            // Failing closed: no master while both claim it, named in host order, on every route that asks.
            let refused = format!(r#"{{"error_text": "split brain: {old}, {new}"}}"#);
            let r = p.wait_for_response("/master", None, SLACK, |r| r.status == 503);
            c.check(r.as_ref().is_ok_and(|r| r.text() == refused), || format!("refuse: /master 503: {r:?}"));
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(SLEEP_MS));
                for path in ["/master".to_owned(), format!("/master?host={new}")] {
                    let r = p.get(&path).map(|r| (r.status, r.text()));
                    c.eq(&format!("refuse: {path} stays refused"), r.ok(), Some((503, refused.clone())));
                }
            }
            c.eq(&format!("{policy}: one split brain line"), p.stdout().count_since(*mark, &line), 1);
            continue;
        }
        let want = if *policy == "host_order" { &old } else { &new };
        let r = p.wait_for_body("/master", want, SLACK);
        c.check(r.is_ok(), || format!("{policy}: /master names {want} in the split brain: {r:?}"));
        // It stays that way: the choice is stable from poll to poll.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(SLEEP_MS));
            c.eq(&format!("{policy}: /master stays"), common::plain_200(p, "/master"), want.clone());
        }
        c.eq(&format!("{policy}: one split brain line"), p.stdout().count_since(*mark, &line), 1);
    }

    // The old primary stops: the split brain is over and both name the promoted host.
    let marks: Vec<usize> = sidecars.iter().map(|p| p.stdout().len()).collect();
    m.stop().expect("stop the old primary");
    for ((policy, p), mark) in policies.iter().zip(&sidecars).zip(&marks) {
        let seen = p.stdout().wait_for_line_after(*mark, "split brain ended", transition());
        c.check(seen.is_ok(), || format!("{policy}: 'split brain ended' printed: {seen:?}"));
        let r = p.wait_for_body("/master", &new, transition());
        c.check(r.is_ok(), || format!("{policy}: /master names the promoted host after the old one stopped: {r:?}"));
        c.eq(&format!("{policy}: one 'split brain ended' line"), p.stdout().count_since(*mark, "split brain ended"), 1);
    }
    if std::env::var_os("PG_STATUS_TESTS_ECHO").is_some() {
        for p in &sidecars {
            eprintln!("{}", p.output_dump());
        }
    }
    c.finish();
}

/// One measured lookup.
struct Answer {
    replica: bool,
    latency: Duration,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

#[test]
fn wait_ms_raises_the_share_of_replica_answers() {
    let Some(bins) = postgres_or_skip("wait_ms_raises_the_share_of_replica_answers") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let nodes: Vec<&pg_status_tests::Node> = cluster.nodes().iter().collect();
    let primary = cluster.primary();
    primary.execute("CREATE TABLE ryw (id bigserial PRIMARY KEY, v int NOT NULL)").expect("table");
    cluster.wait_caught_up(Duration::from_secs(30)).expect("replicas caught up");

    // The issue's scenario: pg-status polls once a second.
    let p = start_ready(for_nodes(&nodes).timing(1000, QUERY_TIMEOUT_MS, MAX_FAILS));
    common::settle(&p, "/master", &primary.host());
    for r in cluster.replicas() {
        p.wait_for_host(&r.host(), Duration::from_secs(10), |e| {
            e["alive"] == json!(true) && e["master"] == json!(false)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", dump(&p)));
    }

    // Four writers, 25 writes/s each (100 writes/s in all): two look up without wait_ms, two with wait_ms=50.
    const RUN: Duration = Duration::from_secs(10);
    const WRITERS_PER_KIND: usize = 2;
    const PERIOD: Duration = Duration::from_millis(40);
    const MAX_LOOKUPS: usize = 300;
    const WAIT_MS: u64 = 50;
    let master = primary.host();
    let run = |wait: Option<u64>| -> (Vec<Answer>, Vec<String>, usize) {
        let mut writer = primary.connect_as("ryw-writer").expect("writer session");
        let mut readers: HashMap<String, postgres::Client> =
            nodes.iter().map(|n| (n.host(), n.connect_as("ryw-reader").expect("reader session"))).collect();
        let mut answers = Vec::new();
        let mut violations = Vec::new();
        let mut checked = 0;
        let start = Instant::now();
        let mut next = start;
        while answers.len() < MAX_LOOKUPS && start.elapsed() < RUN {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += PERIOD;
            if next < Instant::now() {
                next = Instant::now();
            }
            let id: i64 = writer.query_one("INSERT INTO ryw (v) VALUES (1) RETURNING id", &[]).expect("insert").get(0);
            let lsn = writer.query_one("SELECT pg_current_wal_lsn()::text", &[]).expect("lsn").get::<_, String>(0);
            let lsn = format_lsn(pg_status_tests::pg::parse_lsn(&lsn).expect("lsn"));
            let path = match wait {
                None => format!("/replica?min_lsn={lsn}"),
                Some(w) => format!("/replica?min_lsn={lsn}&wait_ms={w}"),
            };
            let t = Instant::now();
            let r = p.get(&path).expect("lookup");
            let latency = t.elapsed();
            assert_eq!(r.status, 200, "GET {path}: {r}");
            let host = r.text();
            if answers.len() % 10 == 0 {
                checked += 1;
                let client = readers.get_mut(&host).unwrap_or_else(|| panic!("unknown host {host:?}"));
                let rows = client.query("SELECT 1 FROM ryw WHERE id = $1", &[&id]).expect("read back");
                if rows.is_empty() {
                    violations.push(format!("row {id} written at {lsn} not on {host} (GET {path})"));
                }
            }
            answers.push(Answer { replica: host != master, latency });
        }
        (answers, violations, checked)
    };
    let merge = |parts: Vec<(Vec<Answer>, Vec<String>, usize)>| {
        parts.into_iter().fold((Vec::new(), Vec::new(), 0), |mut acc, (a, v, c)| {
            acc.0.extend(a);
            acc.1.extend(v);
            acc.2 += c;
            acc
        })
    };
    let ((without, v1, c1), (with, v2, c2)) = std::thread::scope(|s| {
        let a: Vec<_> = (0..WRITERS_PER_KIND).map(|_| s.spawn(|| run(None))).collect();
        let b: Vec<_> = (0..WRITERS_PER_KIND).map(|_| s.spawn(|| run(Some(WAIT_MS)))).collect();
        let a = a.into_iter().map(|t| t.join().expect("writer without wait_ms")).collect();
        let b = b.into_iter().map(|t| t.join().expect("writer with wait_ms")).collect();
        (merge(a), merge(b))
    });
    let rate = (without.len() + with.len()) as f64 / RUN.as_secs_f64();

    let share = |a: &[Answer]| a.iter().filter(|x| x.replica).count();
    let lat = |a: &[Answer]| {
        let mut l: Vec<Duration> = a.iter().map(|x| x.latency).collect();
        l.sort();
        l
    };
    let (n, big_n, m, big_m) = (share(&without), without.len(), share(&with), with.len());
    let (s0, s1) = (n as f64 / big_n.max(1) as f64, m as f64 / big_m.max(1) as f64);
    let (l0, l1) = (lat(&without), lat(&with));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "read-your-writes at 100 writes/s (measured {rate:.0}/s): replica share without wait_ms {:.1}% ({n}/{big_n}), with wait_ms={WAIT_MS} \
         {:.1}% ({m}/{big_m}), p50/p99 latency without {:.1}/{:.1} ms, with {:.1}/{:.1} ms",
        s0 * 100.0,
        s1 * 100.0,
        ms(percentile(&l0, 50)),
        ms(percentile(&l0, 99)),
        ms(percentile(&l1, 50)),
        ms(percentile(&l1, 99)),
    );

    let mut c = Checks::new();
    c.check(big_n >= 200 && big_m >= 200, || format!("enough lookups: {big_n} without, {big_m} with wait_ms"));
    c.check(rate >= 80.0, || format!("about 100 writes/s: {rate:.1}/s"));
    c.check(c1 + c2 >= 40, || format!("enough read-your-writes checks: {}", c1 + c2));
    c.check(v1.is_empty() && v2.is_empty(), || format!("read-your-writes violations: {v1:?} {v2:?}"));
    c.check(s0 < 0.3, || format!("without wait_ms the replica share is low: {:.1}%", s0 * 100.0));
    c.check(s1 > s0 + 0.3, || format!("wait_ms raises the replica share: {:.1}% vs {:.1}%", s1 * 100.0, s0 * 100.0));
    let bound = Duration::from_millis(WAIT_MS + 200);
    let worst = l0.last().copied().max(l1.last().copied()).unwrap_or_default();
    c.check(worst < bound, || format!("no lookup took much longer than the wait: worst {worst:?}, bound {bound:?}"));
    c.finish();
}

/// The distinct hosts named by `count` plain answers to `GET path`.
fn hosts_answering(p: &PgStatus, path: &str, count: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..count).map(|_| common::plain_200(p, path)).collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn min_lsn_under_the_timeline_policy_skips_replicas_of_another_history() {
    let Some(bins) = postgres_or_skip("min_lsn_under_the_timeline_policy_skips_replicas_of_another_history") else {
        return;
    };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (old, promoted, follower) = (cluster.node(0), cluster.node(1), cluster.node(2));
    old.execute("CREATE TABLE ryw (id bigserial PRIMARY KEY, v int NOT NULL)").expect("table");
    cluster.wait_caught_up(Duration::from_secs(30)).expect("replicas caught up");
    let nodes = [old, promoted, follower];
    let policies = ["host_order", "timeline"];
    let sidecars: Vec<PgStatus> =
        policies.iter().map(|policy| start_ready(for_nodes(&nodes).env("pg_status__split_brain", policy))).collect();
    for p in &sidecars {
        common::settle(p, "/master", &old.host());
    }

    // One replica is promoted onto timeline 2 while the other keeps following the old primary on timeline 1,
    // which keeps running and writing: a failover caught half-way.
    promoted.promote().expect("promote");
    let timeline_policy = &sidecars[1];
    timeline_policy
        .wait_for_body("/master", &promoted.host(), transition())
        .unwrap_or_else(|e| panic!("the timeline policy elects the promoted host: {e}\n{}", dump(timeline_policy)));

    // A write on the new master, then more WAL on the old one than that, so the follower's replay position
    // passes the write's LSN as a number although the follower never received the write.
    let id: String = promoted.value("INSERT INTO ryw (v) VALUES (1) RETURNING id").expect("insert").expect("id");
    let written = promoted.current_wal_lsn().expect("lsn");
    let mut old_lsn = old.current_wal_lsn().expect("lsn");
    while old_lsn <= written + (1 << 20) {
        old_lsn = pg_status_tests::pg::write_rows(old, 20_000).expect("write on the old primary");
    }
    follower.wait_replayed(old_lsn, Duration::from_secs(30)).expect("the follower replays the old primary's WAL");
    let row_on_follower = follower.query(&format!("SELECT 1 FROM ryw WHERE id = {id}")).expect("read");
    assert!(row_on_follower.is_empty(), "the follower never received the write on the new timeline");

    let lsn = format_lsn(written);
    for p in &sidecars {
        p.wait_for_host(&follower.host(), transition(), |e| {
            e["lsn"].as_str().and_then(pg_status_tests::pg::parse_lsn).is_some_and(|l| l >= old_lsn)
        })
        .unwrap_or_else(|e| panic!("the follower's position is seen: {e}\n{}", dump(p)));
    }
    let mut c = Checks::new();
    let path = format!("/replica?min_lsn={lsn}");
    // Upstream's comparison: the follower's position is past the write's, so it qualifies.
    c.eq("host_order: min_lsn compares positions only", hosts_answering(&sidecars[0], &path, 4), vec![follower.host()]);
    // Trusting timelines: the follower shows timeline 1, the write is on 2, so the master answers, also after
    // waiting, while the follower is still handed out without min_lsn.
    c.eq(
        "timeline: min_lsn skips a replica of another timeline",
        hosts_answering(timeline_policy, &path, 4),
        vec![promoted.host()],
    );
    c.eq(
        "timeline: ... also after waiting",
        hosts_answering(timeline_policy, &format!("{path}&wait_ms=100"), 2),
        vec![promoted.host()],
    );
    c.eq(
        "timeline: without min_lsn the follower is a replica",
        hosts_answering(timeline_policy, "/replica", 4),
        vec![follower.host()],
    );
    c.finish();
}
