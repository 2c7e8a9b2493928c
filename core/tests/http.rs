//! The request handler, route by route: formats, parameters, errors, readiness and methods (DESIGN 0, 5-7).

mod common;

use common::*;
use pg_status_core::http::{accepts_json, handle, JSON, TEXT, VERSION};
use pg_status_core::snapshot::{Health, HostInput, HostName, HostSpec, Snapshot};

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
    let r = handle(snap, &mut 0, "GET", target, accept.map(str::as_bytes));
    (r.status, r.content_type.unwrap_or(NO_TYPE), String::from_utf8(r.body.as_bytes().to_vec()).unwrap())
}

/// What [`get`] shows for an answer without a `Content-Type` header.
const NO_TYPE: &str = "(none)";

/// Every host a route hands out over `n` requests sharing one cursor, in order.
fn answers(snap: &Snapshot, target: &str, n: usize) -> Vec<String> {
    let mut cursor = 0;
    (0..n)
        .map(|_| {
            let r = handle(snap, &mut cursor, "GET", target, None);
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
    assert_eq!(
        get(&snap, "/master", J),
        (200, JSON, r#"{"host": "h0", "dc": null, "geo": null, "port": 5432}"#.into())
    );
    let located = [
        Spec { health: Health::Alive, obs: Some(master(10)), dc: Some("dc\"1") },
        Spec { health: Health::Alive, obs: Some(replica(10, 0)), dc: Some("dc2") },
    ];
    let located = snapshot(&located, settings(), Some("dc2"));
    assert_eq!(
        get(&located, "/master", J),
        (200, JSON, r#"{"host": "h0", "dc": "dc\"1", "geo": null, "port": 5432}"#.into())
    );
    assert_eq!(
        get(&located, "/replica", J),
        (200, JSON, r#"{"host": "h1", "dc": "dc2", "geo": null, "port": 5433}"#.into())
    );
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
        let nulls = r#"{"host": null, "dc": null, "geo": null, "port": null}"#;
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
    let id = std::sync::Arc::new(HostName::new(HostSpec { name: "h0", port: 5432, ..HostSpec::default() }));
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
    let mut cursor = 0;
    let head = handle(&snap, &mut cursor, "HEAD", "/master", None);
    assert_eq!((head.status, head.body.as_bytes()), (200, &b"h0"[..]));
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = handle(&snap, &mut cursor, method, "/master", None);
        assert_eq!((r.status, r.allow, r.content_type), (405, Some("GET, HEAD"), None), "{method}");
        assert_eq!(handle(&snap, &mut cursor, method, "/nope", None).status, 404);
    }
    for target in ["/", "/master/", "/Master", "/nope", "", "//master", "/master%20"] {
        assert_eq!(get(&snap, target, None), (404, NO_TYPE, String::new()), "{target:?}");
    }
}

#[test]
fn per_host_checks_answer_200_for_the_host_a_route_accepts_and_503_saying_why_otherwise() {
    let snap = cluster();
    let why = |text: &str| (503, JSON, format!(r#"{{"error_text": "{text}"}}"#));
    for (target, expected) in [
        ("/master?host=h0", (200, TEXT, "h0".to_owned())),
        ("/master?host=h1", why("h1 is not the master")),
        ("/master?host=h3", why("h3 is not the master")),
        ("/replica?host=h1", (200, TEXT, "h1".to_owned())),
        ("/replica?host=h2", (200, TEXT, "h2".to_owned())),
        ("/replica?host=h2&lag_ms=1500", why("h2 lags 2000 ms")),
        ("/sync_by_bytes?host=h2", why("h2 lags 5000 bytes")),
        ("/sync_by_time_or_bytes?host=h2", why("h2 lags 2000 ms and 5000 bytes")),
        ("/sync_by_time_or_bytes?host=h2&lag_ms=2000", (200, TEXT, "h2".to_owned())),
        ("/most_sync_by_bytes?host=h2&lag_ms=5000&lag_bytes=5000", (200, TEXT, "h2".to_owned())),
        ("/replica?host=h1&min_lsn=0/FFFFFF", why("h1 has replayed up to 0/2710 only")),
        ("/replica?host=h0", why("h0 is not a replica")),
        ("/replica?host=h3", why("h3 is dead")),
        ("/replica?host=h4", why("h4 is possibly dead")),
    ] {
        assert_eq!(get(&snap, target, None), expected, "{target}");
        let (status, _, _) = get(&snap, target, J);
        assert_eq!(status, expected.0, "{target} in JSON");
    }
    assert_eq!(get(&snap, "/replica?host=h2&lag_ms=1500", J), why("h2 lags 2000 ms"), "always JSON");
    let h1 = r#"{"host": "h1", "dc": null, "geo": null, "port": 5433}"#;
    assert_eq!(get(&snap, "/replica?host=h1", J), (200, JSON, h1.to_owned()));
    for target in ["/master?host=nope", "/replica?host=nope", "/sync_by_time?host=h9"] {
        assert_eq!(get(&snap, target, None), (404, NO_TYPE, String::new()), "{target}");
    }
    assert_eq!(get(&snap, "/replica?host=nope&lag_ms=x", None).0, 400, "parameters are validated first");
    // A check ignores round robin: the same host answers every time, and the cursor does not move.
    let mut cursor = 0;
    for _ in 0..3 {
        assert_eq!(handle(&snap, &mut cursor, "GET", "/replica?host=h2", None).body.as_bytes(), b"h2");
    }
    assert_eq!(cursor, 0);
}

#[test]
fn fallback_none_answers_404_instead_of_the_master() {
    let snap = cluster();
    let high = "/replica?min_lsn=0/FFFFFF";
    assert_eq!(get(&snap, high, None), (200, TEXT, "h0".into()), "the default falls back to the master");
    assert_eq!(get(&snap, &format!("{high}&fallback=none"), None), (404, NO_TYPE, String::new()));
    let nulls = r#"{"host": null, "dc": null, "geo": null, "port": null}"#;
    assert_eq!(get(&snap, &format!("{high}&fallback=none"), J), (404, JSON, nulls.into()));
    assert_eq!(get(&snap, &format!("{high}&fallback=master"), None), (200, TEXT, "h0".into()));
    assert_eq!(get(&snap, "/sync_by_time?fallback=none", None), (200, TEXT, "h1".into()), "a replica qualifies");
    for target in ["/replica?fallback=", "/replica?fallback=Master", "/most_sync_by_bytes?fallback=replica"] {
        assert_eq!(get(&snap, target, None), (400, JSON, r#"{"error_text": "Invalid fallback"}"#.into()), "{target}");
    }
    let wait_first = "/replica?min_lsn=0/1&wait_ms=x&fallback=x";
    assert_eq!(get(&snap, wait_first, None).2, r#"{"error_text": "Invalid wait_ms"}"#);

    // pg_status__replica_fallback=none sets the default; fallback=master overrides it per request.
    let mut s = settings();
    s.replica_fallback = pg_status_core::config::ReplicaFallback::None;
    let specs = [
        Spec { health: Health::Alive, obs: Some(master(10_000)), dc: None },
        Spec { health: Health::Alive, obs: Some(replica(5_000, 2_000)), dc: None },
    ];
    let snap = snapshot(&specs, s, None);
    assert_eq!(get(&snap, "/sync_by_bytes", None), (404, NO_TYPE, String::new()));
    assert_eq!(get(&snap, "/sync_by_bytes?fallback=master", None), (200, TEXT, "h0".into()));
    assert_eq!(get(&snap, "/master", None), (200, TEXT, "h0".into()), "/master is not a replica route");
}

#[test]
fn replicas_lists_every_qualifying_replica_in_preference_order_and_never_the_master() {
    let snap = cluster();
    let mut cursor = 0;
    let mut list = |target: &str, accept: Option<&str>| {
        let r = handle(&snap, &mut cursor, "GET", target, accept.map(str::as_bytes));
        (r.status, r.content_type.unwrap_or(NO_TYPE), String::from_utf8(r.body.as_bytes().to_vec()).unwrap())
    };
    // Healthy h1 and h2 from the cursor on, then the possibly dead h4; the cursor moves past the first.
    assert_eq!(list("/replicas", None), (200, TEXT, "h1\nh2\nh4\n".into()));
    assert_eq!(list("/replicas", None), (200, TEXT, "h2\nh1\nh4\n".into()));
    assert_eq!(list("/replicas", None), (200, TEXT, "h1\nh2\nh4\n".into()));
    assert_eq!(list("/replicas?lag_ms=1500", None), (200, TEXT, "h1\nh4\n".into()));
    let json = list("/replicas?lag_bytes=0", J);
    let expected = r#"[{"host": "h1", "dc": null, "geo": null, "port": 5433}, {"host": "h4", "dc": null, "geo": null, "port": 5436}]"#;
    assert_eq!(json, (200, JSON, expected.into()));
    assert_eq!(list("/replicas?min_lsn=0/FFFFFF", None), (200, NO_TYPE, String::new()), "nothing qualifies");
    assert_eq!(list("/replicas?min_lsn=0/FFFFFF", J), (200, JSON, "[]".into()));
    assert_eq!(list("/replicas?lag_ms=x", None).0, 400);

    // Locality: this instance's data centre first, whatever the cursor says.
    let located = [
        Spec { health: Health::Alive, obs: Some(master(10)), dc: Some("a") },
        Spec { health: Health::Alive, obs: Some(replica(10, 0)), dc: Some("b") },
        Spec { health: Health::Alive, obs: Some(replica(10, 0)), dc: Some("a") },
        Spec { health: Health::Alive, obs: Some(replica(10, 0)), dc: Some("b") },
    ];
    let mut s = settings();
    s.locality_dc = true;
    let located = snapshot(&located, s, Some("a"));
    let mut cursor = 2;
    let r = handle(&located, &mut cursor, "GET", "/replicas", None);
    assert_eq!(r.body.as_bytes(), b"h2\nh3\nh1\n");
    assert_eq!(cursor, 3);
}

#[test]
fn refusing_a_split_brain_answers_503_naming_the_claimants_and_no_replica_route_falls_back() {
    let mut s = settings();
    s.split_brain = pg_status_core::config::SplitBrainPolicy::Refuse;
    let specs = [
        Spec { health: Health::Alive, obs: Some(master(10_000)), dc: None },
        Spec { health: Health::Alive, obs: Some(replica(5_000, 2_000)), dc: None },
        Spec { health: Health::Alive, obs: Some(master(9_000)), dc: None },
    ];
    let snap = snapshot(&specs, s, None);
    let refused = (503, JSON, r#"{"error_text": "split brain: h0, h2"}"#.to_owned());
    assert_eq!(get(&snap, "/master", None), refused);
    assert_eq!(get(&snap, "/master", J), refused);
    assert_eq!(get(&snap, "/master?host=h0", None), refused);
    assert_eq!(get(&snap, "/sync_by_time", None), (404, NO_TYPE, String::new()), "no master to fall back to");
    assert_eq!(get(&snap, "/replica", None), (200, TEXT, "h1".into()), "replicas are still handed out");
    // Once one claim is possibly dead, the other host is master again.
    let mut specs = specs;
    specs[0].health = Health::PossiblyDead;
    let snap = snapshot(&specs, s, None);
    assert_eq!(get(&snap, "/master", None), (200, TEXT, "h2".into()));
}

#[test]
fn hosts_and_status_name_the_port_each_host_is_polled_on() {
    let snap = cluster();
    let v: serde_json::Value = serde_json::from_str(&get(&snap, "/hosts", None).2).unwrap();
    let ports: Vec<u64> = v.as_array().unwrap().iter().map(|h| h["port"].as_u64().unwrap()).collect();
    assert_eq!(ports, [5432, 5433, 5434, 5435, 5436]);
    let s: serde_json::Value = serde_json::from_str(&get(&snap, "/status?host=h3", None).2).unwrap();
    assert_eq!(s["port"], 5435, "a dead host still has its port");
    assert_eq!(get(&snap, "/replica", None).2, "h1", "plain answers stay bare host names");
}
