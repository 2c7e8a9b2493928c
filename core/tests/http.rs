//! The request handler, route by route: formats, parameters, errors, readiness and methods (DESIGN 0, 5-7).

mod common;

use std::sync::atomic::AtomicUsize;

use common::*;
use pg_status_core::cluster::{Health, HostInput, HostName, Snapshot};
use pg_status_core::http::{accepts_json, handle, JSON, TEXT, VERSION};

/// h0 master at 10000; h1 caught-up replica; h2 replica 5000 bytes and 2000 ms behind; h3 dead;
/// h4 possibly dead, caught up.
fn cluster() -> Snapshot {
    let specs = [
        Spec { health: Health::Alive, obs: Some(master(10_000)), dc: None },
        Spec { health: Health::Alive, obs: Some(replica(10_000, 0)), dc: None },
        Spec { health: Health::Alive, obs: Some(replica(5_000, 2_000)), dc: None },
        Spec { health: Health::Dead, obs: None, dc: None },
        Spec { health: Health::PossiblyDead, obs: Some(replica(10_000, 0)), dc: None },
    ];
    snapshot(&specs, settings(), None)
}

/// Status, `Content-Type` ([`NO_TYPE`] when there is none) and body of `GET target`.
fn get(snap: &Snapshot, target: &str, accept: Option<&str>) -> (u16, &'static str, String) {
    let r = handle(snap, &AtomicUsize::new(0), "GET", target, accept.map(str::as_bytes));
    (r.status, r.content_type.unwrap_or(NO_TYPE), String::from_utf8(r.body.as_bytes().to_vec()).unwrap())
}

/// What [`get`] shows for an answer without a `Content-Type` header.
const NO_TYPE: &str = "(none)";

/// Every host a route hands out over `n` requests sharing one cursor, in order.
fn answers(snap: &Snapshot, target: &str, n: usize) -> Vec<String> {
    let cursor = AtomicUsize::new(0);
    (0..n)
        .map(|_| {
            let r = handle(snap, &cursor, "GET", target, None);
            assert_eq!(r.status, 200, "{target}");
            String::from_utf8(r.body.as_bytes().to_vec()).unwrap()
        })
        .collect()
}

const J: Option<&str> = Some("application/json");

#[test]
fn selection_routes_apply_their_filters() {
    let snap = cluster();
    for (target, expected) in [
        ("/replica", &["h1", "h2"][..]),
        ("/replica?lag_ms=1500", &["h1"]),
        ("/replica?lag_bytes=6000", &["h1", "h2"]),
        ("/replica?lag_ms=0&lag_bytes=0", &["h1"]),
        ("/replica?min_lsn=0/2710", &["h1"]),
        ("/replica?min_lsn=0%2F1388", &["h1", "h2"]),
        ("/replica?min_lsn=0/FFFFFF", &["h0"]),
        ("/replica?lag_ms=1&lag_ms=x", &["h1"]),
        ("/replica?foo=bar&lag_bytes=0", &["h1"]),
        ("/sync_by_time", &["h1"]),
        ("/sync_by_time?lag_ms=3000", &["h1", "h2"]),
        ("/sync_by_time?lag_ms=3000&lag_bytes=0", &["h1", "h2"]),
        ("/sync_by_bytes", &["h1"]),
        ("/sync_by_bytes?lag_bytes=5000", &["h1", "h2"]),
        ("/sync_by_bytes?lag_bytes=5000&min_lsn=0/2710", &["h1"]),
        ("/sync_by_time_or_bytes", &["h1"]),
        ("/sync_by_time_or_bytes?lag_ms=3000", &["h1", "h2"]),
        ("/sync_by_time_or_bytes?lag_bytes=5000", &["h1", "h2"]),
        ("/sync_by_time_and_bytes?lag_ms=3000", &["h1"]),
        ("/sync_by_time_and_bytes?lag_ms=3000&lag_bytes=5000", &["h1", "h2"]),
        ("/most_sync_by_bytes", &["h1"]),
        ("/most_sync_by_bytes?lag_ms=5000&lag_bytes=10000", &["h1"]),
        ("/most_sync_by_bytes?min_lsn=1/0", &["h0"]),
        ("/master?lag_ms=abc", &["h0"]),
    ] {
        let got = answers(&snap, target, 4);
        let cycle: Vec<String> = expected.iter().cycle().take(4).map(|s| s.to_string()).collect();
        assert_eq!(got, cycle, "{target}");
    }
}

#[test]
fn formats_follow_the_accept_header() {
    let snap = cluster();
    assert_eq!(get(&snap, "/master", None), (200, TEXT, "h0".into()));
    assert_eq!(get(&snap, "/master", J), (200, JSON, r#"{"host": "h0", "dc": null, "geo": null}"#.into()));
    let located = [
        Spec { health: Health::Alive, obs: Some(master(10)), dc: Some("dc\"1") },
        Spec { health: Health::Alive, obs: Some(replica(10, 0)), dc: Some("dc2") },
    ];
    let located = snapshot(&located, settings(), Some("dc2"));
    assert_eq!(get(&located, "/master", J), (200, JSON, r#"{"host": "h0", "dc": "dc\"1", "geo": null}"#.into()));
    assert_eq!(get(&located, "/replica", J), (200, JSON, r#"{"host": "h1", "dc": "dc2", "geo": null}"#.into()));
    assert_eq!(get(&snap, "/version", None), (200, TEXT, VERSION.into()));
    assert_eq!(get(&snap, "/version", J), (200, JSON, format!(r#"{{"version": "{VERSION}"}}"#)));
    for (accept, json) in [
        ("application/json", true),
        ("APPLICATION/JSON", true),
        ("application/json; charset=utf-8", true),
        ("text/html, application/json;q=0.5", true),
        ("text/html,application/json ; q=1", true),
        ("application/json;q=0", false),
        ("application/json; q=0.000", false),
        ("application/json;q=0.001", true),
        ("*/*", false),
        ("text/plain", false),
        ("application/jsonx", false),
        ("", false),
    ] {
        assert_eq!(accepts_json(accept.as_bytes()), json, "{accept:?}");
    }
}

#[test]
fn nothing_to_answer_is_404_empty_without_a_type_or_json_nulls() {
    let specs = [
        Spec { health: Health::Dead, obs: None, dc: None },
        Spec { health: Health::Alive, obs: Some(replica(1, 5_000)), dc: None },
    ];
    let snap = snapshot(&specs, settings(), None);
    for target in ["/master", "/sync_by_time", "/replica?min_lsn=1/0", "/most_sync_by_bytes"] {
        assert_eq!(get(&snap, target, None), (404, NO_TYPE, String::new()), "{target}");
        let nulls = r#"{"host": null, "dc": null, "geo": null}"#;
        assert_eq!(get(&snap, target, J), (404, JSON, nulls.into()), "{target}");
    }
}

#[test]
fn invalid_parameters_are_400_with_json_whatever_the_accept_header() {
    let snap = cluster();
    for (target, text) in [
        ("/replica?lag_ms=-1", "Invalid lag_ms"),
        ("/replica?lag_ms=abc", "Invalid lag_ms"),
        ("/replica?lag_ms=", "Invalid lag_ms"),
        ("/replica?lag_ms", "Invalid lag_ms"),
        ("/replica?lag_ms=+5", "Invalid lag_ms"),
        ("/replica?lag_ms=18446744073709551616", "Invalid lag_ms"),
        ("/sync_by_time?lag_ms=1.5", "Invalid lag_ms"),
        ("/replica?lag_bytes=1e3", "Invalid lag_bytes"),
        ("/sync_by_bytes?lag_bytes=%20", "Invalid lag_bytes"),
        ("/replica?min_lsn=abc&lag_bytes=x&lag_ms=y", "Invalid lag_ms"),
        ("/replica?min_lsn=abc&lag_bytes=x", "Invalid lag_bytes"),
        ("/most_sync_by_bytes?min_lsn=abc", "Invalid min_lsn"),
        ("/replica?min_lsn=0/", "Invalid min_lsn"),
        ("/replica?min_lsn=123456789/0", "Invalid min_lsn"),
        ("/replica?min_lsn=0/1&wait_ms=soon", "Invalid wait_ms"),
        ("/status", "Get parameter 'host' wasn't passed"),
    ] {
        let expected = format!(r#"{{"error_text": "{text}"}}"#);
        assert_eq!(get(&snap, target, None), (400, JSON, expected.clone()), "{target}");
        assert_eq!(get(&snap, target, J), (400, JSON, expected), "{target}");
    }
    assert_eq!(get(&snap, "/replica?lag_ms=18446744073709551615", None).0, 200, "u64::MAX is valid");
    assert_eq!(get(&snap, "/replica?lag_ms=000000000000000000000001", None).0, 200, "leading zeros are fine");
}

#[test]
fn hosts_and_status_describe_every_host() {
    let snap = cluster();
    let (status, ct, body) = get(&snap, "/hosts", None);
    assert_eq!((status, ct), (200, JSON));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["h0", "h1", "h2", "h3", "h4"]);
    assert_eq!(v[0]["master"], true);
    assert_eq!(v[2]["lag_bytes"], 5000);
    assert_eq!(v[2]["lag_ms"], 2000);
    assert_eq!(v[2]["sync_by_bytes"], false);
    assert_eq!(v[2]["lsn"], "0/1388");
    assert_eq!(v[3]["alive"], false);
    assert!(v[3]["lag_bytes"].is_null() && v[3]["lsn"].is_null());
    assert_eq!(v[4]["alive"], true, "a possibly dead host still shows its last measurements");
    let possible_dead: Vec<&serde_json::Value> = v.as_array().unwrap().iter().map(|h| &h["possible_dead"]).collect();
    assert_eq!(possible_dead, [false, false, false, false, true]);

    let (status, ct, body) = get(&snap, "/status?host=h2", None);
    assert_eq!((status, ct), (200, JSON));
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut without_name = v[2].as_object().unwrap().clone();
    without_name.remove("host");
    assert_eq!(s, serde_json::Value::Object(without_name));
    assert_eq!(get(&snap, "/status?host=nope", None), (404, NO_TYPE, String::new()));
    assert_eq!(get(&snap, "/status?host=nope", J), (404, NO_TYPE, String::new()));
    assert_eq!(get(&snap, "/status?host=h%32", None).0, 200, "the host parameter is percent-decoded");
}

#[test]
fn readiness_comes_before_validation_and_live_answers_at_once() {
    let id = std::sync::Arc::new(HostName::new("h0", None, None, None, None));
    let snap = Snapshot::derive(false, &[HostInput { id: &id, health: Health::Unknown, last: None }], settings());
    for target in ["/master", "/replica?lag_ms=abc", "/hosts", "/status", "/ready", "/most_sync_by_bytes"] {
        assert_eq!(get(&snap, target, None), (503, JSON, r#"{"error_text": "pg_monitor is not ready"}"#.into()));
    }
    assert_eq!(get(&snap, "/live", None), (200, TEXT, "OK".into()));
    assert_eq!(get(&snap, "/version", None).0, 200);
    assert_eq!(get(&cluster(), "/ready", None), (200, TEXT, "OK".into()));
}

#[test]
fn methods_and_unknown_paths() {
    let snap = cluster();
    let cursor = AtomicUsize::new(0);
    let head = handle(&snap, &cursor, "HEAD", "/master", None);
    assert_eq!((head.status, head.body.as_bytes()), (200, &b"h0"[..]));
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = handle(&snap, &cursor, method, "/master", None);
        assert_eq!((r.status, r.allow, r.content_type), (405, Some("GET, HEAD"), None), "{method}");
        assert_eq!(handle(&snap, &cursor, method, "/nope", None).status, 404);
    }
    for target in ["/", "/master/", "/Master", "/nope", "", "//master", "/master%20"] {
        assert_eq!(get(&snap, target, None), (404, NO_TYPE, String::new()), "{target:?}");
    }
}
