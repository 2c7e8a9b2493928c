//! The Prometheus exposition: every sample belongs to a declared metric, values parse, and the numbers
//! follow what the monitor saw.

mod common;

use std::time::Instant;

use common::*;
use pg_status_core::config::Config;
use pg_status_core::http::{self, prepare, Body, Prepared, Route};
use pg_status_core::metrics::{answer, render, HttpCounters, Telemetry, CONTENT_TYPE};
use pg_status_core::monitor::{Action, Monitor, PollError, PollErrorKind};

#[test]
fn metrics_describe_hosts_polls_and_requests() {
    let t0 = start();
    let mut cfg = config(2, 100, 50, 60_000, 3);
    cfg.hosts[1].name = "we\"ird\\host".into();
    let mut m = Monitor::new(&cfg, t0);
    let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action(t0)).collect();
    for Action::Poll { id, .. } in actions {
        let result =
            if id.host.get() == 0 { Ok(master(100)) } else { Err(PollError::new(PollErrorKind::Auth, "denied")) };
        m.handle_poll_result(id, result, t0 + ms(3));
    }
    let mut http = HttpCounters::default();
    http.record(Some(Route::Master), 200);
    http.record(Some(Route::Master), 200);
    http.record(None, 404);
    let text = render(&m.snapshot(), &Telemetry::of(&m), &http, t0 + ms(1003));

    let mut declared = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let name = name_labels.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(declared.iter().any(|d| d == name || d == base), "{line}: undeclared");
        assert!(value.parse::<f64>().is_ok(), "{line}: bad value");
    }
    for expected in [
        "pg_status_ready 1",
        "pg_status_masters 1",
        "pg_status_host_up{host=\"h0\"} 1",
        "pg_status_host_up{host=\"we\\\"ird\\\\host\"} 0",
        "pg_status_host_consecutive_failures{host=\"we\\\"ird\\\\host\"} 1",
        "pg_status_host_last_success_age_seconds{host=\"h0\"} 1.000",
        "pg_status_poll_failures_total{host=\"we\\\"ird\\\\host\",cause=\"auth\"} 1",
        "pg_status_poll_duration_seconds_bucket{host=\"h0\",le=\"0.005\"} 1",
        "pg_status_poll_duration_seconds_bucket{host=\"h0\",le=\"0.0025\"} 0",
        "pg_status_http_requests_total{route=\"/master\",status=\"200\"} 2",
        "pg_status_http_requests_total{route=\"other\",status=\"404\"} 1",
    ] {
        assert!(text.lines().any(|l| l == expected), "missing {expected:?} in\n{text}");
    }
}

fn monitor(now: Instant) -> Monitor {
    let config = Config::from_vars([("pg_status__hosts", "db1,db2")]);
    Monitor::new(&config.expect("a valid configuration"), now)
}

#[test]
fn metrics_are_a_route_answered_before_readiness_with_get_or_head_only() {
    let now = start();
    let snapshot = monitor(now).snapshot();
    assert!(!snapshot.ready);
    for method in ["GET", "HEAD"] {
        for target in ["/metrics", "/metrics?x=1"] {
            assert_eq!(prepare(&snapshot, method, target, None), Prepared::Metrics, "{method} {target}");
        }
    }
    let Prepared::Respond(refused) = prepare(&snapshot, "POST", "/metrics", None) else {
        panic!("POST /metrics was not refused");
    };
    assert_eq!((refused.status, refused.allow, refused.body), (405, Some("GET, HEAD"), Body::Empty));
    assert_eq!(Route::from_path("/metrics"), Some(Route::Metrics));
    assert_eq!(Route::Metrics.path(), "/metrics");
}

#[test]
fn the_answer_renders_the_published_state_and_counts_metrics_after_unknown_paths() {
    let now = start();
    let m = monitor(now);
    let mut http = HttpCounters::default();
    http.record(Some(Route::Metrics), 200);
    http.record(None, 404);
    http.record(Some(Route::Live), 200);
    let answer = answer(&m.snapshot(), &Telemetry::of(&m), &http, now);
    assert_eq!((answer.status, answer.content_type), (200, Some(CONTENT_TYPE)));
    let text = String::from_utf8_lossy(answer.body.as_bytes()).into_owned();
    let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("pg_status_http_requests_total{")).collect();
    assert_eq!(
        requests,
        [
            "pg_status_http_requests_total{route=\"/live\",status=\"200\"} 1",
            "pg_status_http_requests_total{route=\"other\",status=\"404\"} 1",
            "pg_status_http_requests_total{route=\"/metrics\",status=\"200\"} 1",
        ]
    );
    assert!(text.lines().any(|l| l == "pg_status_ready 0"), "{text}");
    assert!(text.lines().any(|l| l == "pg_status_host_consecutive_failures{host=\"db2\"} 0"), "{text}");
}

#[test]
fn the_snapshot_alone_answers_without_telemetry_or_counters() {
    let snapshot = monitor(start()).snapshot();
    let answer = http::handle(&snapshot, &mut 0, "GET", "/metrics", None);
    assert_eq!((answer.status, answer.content_type), (200, Some(CONTENT_TYPE)));
    let text = String::from_utf8_lossy(answer.body.as_bytes()).into_owned();
    assert!(text.lines().any(|l| l == "pg_status_host_up{host=\"db1\"} 0"), "{text}");
    assert!(!text.contains("pg_status_host_consecutive_failures{"), "{text}");
    assert!(!text.contains("pg_status_http_requests_total{"), "{text}");
}
