//! Readiness (DESIGN 0): `/live` answers at once, `/ready` and every host route answer 503 until every host
//! has finished its first poll (here one host hangs until its deadline), then 200, and never turn back.

mod common;

use std::time::{Duration, Instant};

use common::{for_nodes, Checks, SLACK, STARTUP};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, Proxy};

const QUERY_TIMEOUT_MS: u64 = 3000;

#[test]
fn not_ready_until_every_host_finished_its_first_poll() {
    let Some(bins) = postgres_or_skip("not_ready_until_every_host_finished_its_first_poll") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(0)).expect("cluster");
    let m = cluster.node(0);
    // A second host that accepts connections but never answers: its first poll ends at the deadline.
    let hung = Proxy::start(m.addr()).expect("proxy");
    hung.freeze();
    let builder = for_nodes(&[m])
        .env("pg_status__hosts", format!("{},{}", m.host(), hung.host()))
        .env("pg_status__pg_port", format!("{},{}", m.port(), hung.port()))
        .timing(100, QUERY_TIMEOUT_MS, 3)
        // A hung handshake is also bounded by connect_timeout: keep it out of the way of the deadline.
        .env("pg_status__connect_timeout", 10);
    let p = builder.spawn().expect("spawn");
    let started = p.started();
    p.wait_listening(STARTUP).expect("listening");
    let listening_after = started.elapsed();
    let mut c = Checks::new();

    // /live at once; everything about hosts 503 with a JSON error, before parameter validation.
    let r = p.get("/live").expect("live");
    c.eq("/live status", r.status, 200);
    c.eq("/live body", r.text(), "OK".to_owned());
    if listening_after + Duration::from_millis(500) < Duration::from_millis(QUERY_TIMEOUT_MS) {
        for path in [
            "/ready",
            "/master",
            "/replica",
            "/replica?lag_ms=abc",
            "/sync_by_time",
            "/sync_by_bytes",
            "/sync_by_time_or_bytes",
            "/sync_by_time_and_bytes",
            "/most_sync_by_bytes?min_lsn=bad",
            "/hosts",
            "/status",
            "/status?host=whatever",
        ] {
            for accept in [None, Some("application/json")] {
                let r = p.get_accept(path, accept).expect("request");
                c.eq(&format!("GET {path} (Accept {accept:?}) before ready: status"), r.status, 503);
                c.eq(&format!("GET {path} before ready: content type"), r.content_type(), "application/json".into());
                let error = r.json().ok().and_then(|v| v["error_text"].as_str().map(str::to_owned));
                c.eq(
                    &format!("GET {path} before ready: error_text"),
                    error.as_deref(),
                    Some("pg_monitor is not ready"),
                );
            }
        }
        let still_not_ready = started.elapsed() < Duration::from_millis(QUERY_TIMEOUT_MS);
        c.check(still_not_ready, || "the checks above ran before the deadline".into());
    } else {
        c.check(false, || format!("pg-status took {listening_after:?} to listen; the 503 window was missed"));
    }

    // Ready once the hung host's first poll hits its deadline.
    p.wait_ready(Duration::from_millis(QUERY_TIMEOUT_MS) + SLACK).expect("ready after the deadline");
    let ready_after = started.elapsed();
    c.check(ready_after >= Duration::from_millis(QUERY_TIMEOUT_MS * 9 / 10), || {
        format!(
            "ready only after the hung host's first poll ended ({QUERY_TIMEOUT_MS} ms): ready after {ready_after:?}"
        )
    });
    let r = p.get("/ready").expect("ready");
    c.eq("/ready body", r.text(), "OK".to_owned());
    common::settle(&p, "/master", &m.host());

    // Never turns back to not ready, even with every host gone.
    m.kill().expect("kill");
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        c.eq("/ready stays 200", p.get("/ready").expect("ready").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    c.finish();
}
