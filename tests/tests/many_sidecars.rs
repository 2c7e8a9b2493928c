//! Many sidecars behind PgBouncer: in transaction-pooling mode in front of each server, PgBouncer lets 50
//! pg-status processes share two server backends per server, and every one of them still reports the right
//! master and lag and follows a failover. Also measured: what PgBouncer adds to a poll, and that pg-status's
//! connection is PgBouncer's, not the server's.

mod common;

use std::time::{Duration, Instant};

use pg_status_tests::pg::{write_rows, Session};
use pg_status_tests::{
    postgres_or_skip, wait_until_ok, Cluster, ClusterOptions, Node, PgBouncer, PgBouncerOptions, PgStatus,
};

const SIDECARS: usize = 50;
const POOL_SIZE: u32 = 2;
const PASSWORD: &str = "postgres";

/// The pooling and timeout settings of the shipped example, `deploy/pgbouncer/pgbouncer.ini` (its addresses
/// and files are the harness's own).
fn bouncer_options() -> PgBouncerOptions {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pgbouncer/pgbouncer.ini");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let own = ["listen_addr", "listen_port", "auth_type", "auth_file", "max_client_conn"];
    let mut section = "";
    let mut extra = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(';')) {
        if line.starts_with('[') {
            section = line;
        } else if let Some((key, _)) = line.split_once('=') {
            if section == "[pgbouncer]" && !own.contains(&key.trim()) {
                extra.push(line.to_owned());
            }
        }
    }
    assert!(extra.iter().any(|l| l.replace(' ', "") == "pool_mode=transaction"), "{extra:?}");
    assert!(extra.iter().any(|l| l.replace(' ', "") == format!("default_pool_size={POOL_SIZE}")), "{extra:?}");
    PgBouncerOptions { pool_size: POOL_SIZE, max_clients: 200, extra }
}

fn pg_status_backends(node: &Node) -> Vec<Session> {
    node.foreign_sessions().expect("pg_stat_activity")
}

/// The value of the sample `key` (name and labels, exactly) in a scrape.
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok()))
}

/// Starts `SIDECARS` pg-status processes watching `hosts`, and waits until each is ready.
fn start_sidecars(hosts: &[(String, u16)]) -> Vec<PgStatus> {
    let sidecars: Vec<PgStatus> = (0..SIDECARS)
        .map(|_| {
            // Fifty processes logging in at once (SCRAM, in a test build) on two cores need more than the
            // tests' usual 1 s to connect.
            let builder = common::builder().hosts(hosts).timing(250, 10_000, 3);
            builder.env("pg_status__connect_timeout", 10).spawn().expect("pg-status starts")
        })
        .collect();
    for p in &sidecars {
        p.wait_listening(common::STARTUP).expect("pg-status listens");
        p.wait_ready(Duration::from_secs(60)).expect("pg-status becomes ready");
    }
    sidecars
}

/// How many clients of the `postgres` database `bouncer` shows, once it shows `want` or after `within`: a
/// sidecar whose connection is being replaced at the moment of a look is not missing.
fn clients_within(bouncer: &PgBouncer, want: usize, within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let clients = bouncer.clients().expect("SHOW CLIENTS");
        if clients >= want || start.elapsed() >= within {
            return clients;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every sidecar answers `path` with `body`; returns how long the last one took.
fn all_answer(sidecars: &[PgStatus], path: &str, body: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    for (i, p) in sidecars.iter().enumerate() {
        let left = timeout.saturating_sub(start.elapsed());
        p.wait_for_body(path, body, left).unwrap_or_else(|e| panic!("sidecar {i}: {path}: {e}\n{}", p.output_dump()));
    }
    start.elapsed()
}

/// Waits until `pred` accepts every sidecar's `/hosts` entry of `host`.
fn all_see(sidecars: &[PgStatus], host: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool + Copy) {
    for (i, p) in sidecars.iter().enumerate() {
        p.wait_for_host(host, Duration::from_secs(60), pred).unwrap_or_else(|e| panic!("sidecar {i}: {what}: {e}"));
    }
}

/// The most pg-status backends (client sessions other than the harness's) seen on `node` over `samples`
/// looks, 100 ms apart.
fn most_backends(node: &Node, samples: usize) -> usize {
    (0..samples)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            pg_status_backends(node).len()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn fifty_sidecars_share_two_backends_per_server_and_follow_a_failover() {
    let test = "fifty_sidecars_share_two_backends_per_server_and_follow_a_failover";
    let Some(bins) = postgres_or_skip(test) else { return };
    if !std::path::Path::new(pg_status_tests::pgbouncer::PROGRAM).is_file() && !pg_status_tests::is_ci() {
        eprintln!("!!! SKIPPING {test}: PgBouncer missing (apt-get install pgbouncer)");
        return;
    }
    let started = Instant::now();
    pg_status_tests::net::raise_nofile_limit(4096).expect("open files limit");
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (m, r) = (cluster.primary(), &cluster.replicas()[0]);
    let bm = PgBouncer::start(m, PASSWORD, &bouncer_options()).expect("PgBouncer before the master");
    let br = PgBouncer::start(r, PASSWORD, &bouncer_options()).expect("PgBouncer before the replica");
    let hosts = [(bm.host(), bm.port()), (br.host(), br.port())];
    let sidecars = start_sidecars(&hosts);
    let mut c = common::Checks::new();

    // Every sidecar names the right master and replica.
    all_answer(&sidecars, "/master", &bm.host(), Duration::from_secs(60));
    all_answer(&sidecars, "/replica", &br.host(), Duration::from_secs(60));

    // 50 client connections on each PgBouncer, at most 2 backends on each server.
    for bouncer in [&bm, &br] {
        let clients = clients_within(bouncer, SIDECARS, Duration::from_secs(10));
        c.check(clients >= SIDECARS, || format!("{clients} sidecar clients on {}, want {SIDECARS}", bouncer.host()));
    }
    for node in [m, r] {
        let most = most_backends(node, 20);
        c.check((1..=POOL_SIZE as usize).contains(&most), || {
            format!("{}: {most} backends, want 1 to {POOL_SIZE}: {:?}", node.name(), pg_status_backends(node))
        });
    }

    // Lag: with replay paused the replica falls behind, and every sidecar sees it; after resuming, none does.
    r.pause_replay().expect("pause replay");
    let lsn = write_rows(m, 5000).expect("write on the master");
    r.wait_received(lsn, Duration::from_secs(30)).expect("the replica receives the WAL");
    all_see(&sidecars, &br.host(), "replica lag", |h| h["lag_bytes"].as_u64().is_some_and(|b| b > 0));
    r.resume_replay().expect("resume replay");
    r.wait_replayed(lsn, Duration::from_secs(30)).expect("the replica catches up");
    all_see(&sidecars, &br.host(), "no replica lag", |h| h["lag_bytes"].as_u64() == Some(0));

    // Failover behind PgBouncer: the master crashes, the replica is promoted; every sidecar follows.
    m.kill().expect("crash the master");
    r.promote().expect("promote the replica");
    let promoted = Instant::now();
    let followed = all_answer(&sidecars, "/master", &br.host(), Duration::from_secs(90));
    eprintln!("all {SIDECARS} sidecars named the new master {:.2} s after the promotion", followed.as_secs_f64());
    // The old master goes from possibly dead (still listed, never chosen while a healthy master exists) to
    // dead once max_fails polls through PgBouncer have failed.
    all_see(&sidecars, &bm.host(), "the old master dead", |h| h["alive"] == false);
    eprintln!(
        "all {SIDECARS} sidecars had the old master dead {:.2} s after the promotion",
        promoted.elapsed().as_secs_f64()
    );
    let most = most_backends(r, 10);
    c.check((1..=POOL_SIZE as usize).contains(&most), || format!("new master: {most} backends"));
    eprintln!(
        "{test} took {:.1} s ({:.1} s since the promotion)",
        started.elapsed().as_secs_f64(),
        promoted.elapsed().as_secs_f64()
    );
    c.finish();
}

/// Polls (count, total seconds) of `host` in a scrape.
fn polls(scrape: &str, host: &str) -> (f64, f64) {
    let count = sample(scrape, &format!("pg_status_poll_duration_seconds_count{{host=\"{host}\"}}")).unwrap_or(0.0);
    let sum = sample(scrape, &format!("pg_status_poll_duration_seconds_sum{{host=\"{host}\"}}")).unwrap_or(0.0);
    (count, sum)
}

#[test]
fn pgbouncer_adds_to_a_poll_and_hides_a_server_restart() {
    let test = "pgbouncer_adds_to_a_poll_and_hides_a_server_restart";
    let Some(bins) = postgres_or_skip(test) else { return };
    if !std::path::Path::new(pg_status_tests::pgbouncer::PROGRAM).is_file() && !pg_status_tests::is_ci() {
        eprintln!("!!! SKIPPING {test}: PgBouncer missing (apt-get install pgbouncer)");
        return;
    }
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (m, r) = (cluster.primary(), &cluster.replicas()[0]);
    let br = PgBouncer::start(r, PASSWORD, &bouncer_options()).expect("PgBouncer before the replica");
    let direct = r.host();
    let pooled = br.host();
    let mut c = common::Checks::new();

    // The replica twice: directly and through PgBouncer, polled every 20 ms.
    let hosts = [(m.host(), m.port()), (direct.clone(), r.port()), (pooled.clone(), br.port())];
    let p = common::start_ready(common::builder().hosts(&hosts).timing(20, 2000, 3));
    for h in [&direct, &pooled] {
        p.wait_for_host(h, common::STARTUP, |e| e["alive"] == true).expect("replica polled");
    }
    // Steady state only: the first poll of each host also connects and authenticates.
    std::thread::sleep(Duration::from_millis(500));
    let before = p.get("/metrics").expect("metrics").text();
    std::thread::sleep(Duration::from_secs(5));
    let after = p.get("/metrics").expect("metrics").text();
    let mean = |host: &str| {
        let ((c0, s0), (c1, s1)) = (polls(&before, host), polls(&after, host));
        ((s1 - s0) / (c1 - c0).max(1.0), c1 - c0)
    };
    let ((direct_mean, direct_n), (pooled_mean, pooled_n)) = (mean(&direct), mean(&pooled));
    eprintln!(
        "mean poll: direct {:.0} µs over {direct_n} polls, through PgBouncer {:.0} µs over {pooled_n} polls \
         (+{:.0} µs)",
        direct_mean * 1e6,
        pooled_mean * 1e6,
        (pooled_mean - direct_mean) * 1e6
    );
    c.check(direct_n >= 20.0 && pooled_n >= 20.0, || format!("too few polls: {direct_n}, {pooled_n}"));

    // pg-status's connection through PgBouncer ends at PgBouncer: PgBouncer lists it as a client, and the
    // server's backend is PgBouncer's (it also serves the harness's sessions through PgBouncer).
    let clients = br.show("CLIENTS").expect("SHOW CLIENTS");
    c.check(clients.iter().any(|k| k["application_name"] == "pg-status" && k["database"] == "postgres"), || {
        format!("no pg-status client on PgBouncer: {clients:?}")
    });
    let servers = br.show("SERVERS").expect("SHOW SERVERS");
    c.check(!servers.is_empty() && servers.len() <= POOL_SIZE as usize, || format!("servers: {servers:?}"));

    // A server restart between two polls: the direct connection breaks and is replaced, the one through
    // PgBouncer does not (PgBouncer drops its broken server connection and opens a new one for the next
    // query). Polls are 3 s apart so that the restart fits between two of them; retried if it did not fit.
    drop(p);
    let p = common::start_ready(common::builder().hosts(&hosts).timing(3000, 2000, 3));
    let opened = |scrape: &str, host: &str| {
        sample(scrape, &format!("pg_status_host_connections_opened_total{{host=\"{host}\"}}")).unwrap_or(-1.0)
    };
    let mut fitted = false;
    for attempt in 1..=3 {
        let scrape = p.get("/metrics").expect("metrics").text();
        let (count, _) = polls(&scrape, &pooled);
        // Right after a successful poll of the pooled host: the next is 3 s away. (After a failed one it
        // would be retried at the fast interval, on a new connection.)
        let failing = format!("pg_status_host_consecutive_failures{{host=\"{pooled}\"}}");
        let after_poll = wait_until_ok(Duration::from_secs(10), "a successful poll through PgBouncer", || {
            let now = p.get("/metrics").map_err(|e| e.to_string())?.text();
            if polls(&now, &pooled).0 > count && sample(&now, &failing) == Some(0.0) {
                Ok(now)
            } else {
                Err("no new poll".to_owned())
            }
        })
        .expect("polls go on");
        let restart = Instant::now();
        r.stop().expect("stop the replica");
        r.start().expect("start the replica");
        pg_status_tests::pg::wait_accepting(r, Duration::from_secs(30)).expect("replica accepts");
        let took = restart.elapsed();
        // Two more polls of each.
        let target = polls(&after_poll, &pooled).0 + 2.0;
        let later = wait_until_ok(Duration::from_secs(20), "two more polls", || {
            let now = p.get("/metrics").map_err(|e| e.to_string())?.text();
            if polls(&now, &pooled).0 >= target && polls(&now, &direct).0 >= polls(&after_poll, &direct).0 + 2.0 {
                Ok(now)
            } else {
                Err("waiting".to_owned())
            }
        })
        .expect("polls go on after the restart");
        if took > Duration::from_millis(2500) {
            eprintln!("attempt {attempt}: the restart took {took:?}, longer than the gap between polls; again");
            continue;
        }
        eprintln!("restart took {took:?}");
        let failures = |scrape: &str, host: &str| -> f64 {
            ["connect", "auth", "query", "timeout", "bad_reply", "closed"]
                .iter()
                .filter_map(|cause| {
                    sample(scrape, &format!("pg_status_poll_failures_total{{host=\"{host}\",cause=\"{cause}\"}}"))
                })
                .sum()
        };
        c.eq(
            "connections opened to PgBouncer across the restart",
            opened(&later, &pooled),
            opened(&after_poll, &pooled),
        );
        c.eq("failed polls through PgBouncer", failures(&later, &pooled), failures(&after_poll, &pooled));
        c.check(opened(&later, &direct) > opened(&after_poll, &direct), || {
            format!(
                "the direct connection was not replaced: {} then {}",
                opened(&after_poll, &direct),
                opened(&later, &direct)
            )
        });
        fitted = true;
        break;
    }
    c.check(fitted, || "the restart never fitted between two polls".into());
    c.finish();
}
