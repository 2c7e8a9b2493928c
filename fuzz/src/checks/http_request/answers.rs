//! Checking the answers: shapes every response must have, host answers, host documents, selections, lists
//! and per-host checks.

use pg_status_core::http::{self, Response};
use pg_status_core::observation::Role;
use pg_status_core::snapshot::Health;
use pg_status_reference::{lsn, routes, View};
use serde_json::Value;

use super::decode::{CaseHost, HttpCase};
use super::expect::{case_port, closeness, Wanted};

/// Checks what every answer must be: a known content type exactly when there is a body, JSON that parses,
/// UTF-8 text, and an `Allow` header exactly on 405. Returns the parsed JSON body.
pub(super) fn check_any_response(response: &Response) -> Option<Value> {
    let body = response.body.as_bytes();
    assert!(matches!(response.status, 200 | 400 | 404 | 405 | 503), "status {}", response.status);
    assert_eq!(response.allow.is_some(), response.status == 405, "Allow header on {}", response.status);
    assert_eq!(response.content_type.is_none(), body.is_empty(), "a content type exactly with a body");
    match response.content_type.unwrap_or(http::TEXT) {
        http::JSON => Some(
            serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("a JSON body does not parse ({e}): {:?}", String::from_utf8_lossy(body))),
        ),
        http::TEXT => {
            assert!(std::str::from_utf8(body).is_ok(), "a text body is not UTF-8");
            None
        }
        other => panic!("content type {other:?}"),
    }
}

/// The host an answer names, or `None` for its "no host" form (DESIGN 7), after checking its shape: in
/// JSON `{"host", "dc", "geo"}` with the named host's locality, or all three null.
pub(super) fn answered_host(
    hosts: &[CaseHost],
    response: &Response,
    json_body: Option<Value>,
    json: Option<bool>,
) -> Option<String> {
    if let Some(json) = json {
        assert_eq!(json_body.is_some(), json, "content type {:?} when JSON is {json}", response.content_type);
    }
    let host = match json_body {
        Some(Value::Object(map)) if map.len() == 4 => match map.get("host") {
            Some(Value::String(name)) => {
                let i = hosts.iter().position(|h| h.name == *name).unwrap_or_else(|| panic!("unknown host {name}"));
                let host = &hosts[i];
                let place = [("dc", host.dc), ("geo", host.geo)];
                for (key, value) in place {
                    assert_eq!(map.get(key), Some(&Value::from(value)), "{key} of {name}: {map:?}");
                }
                assert_eq!(map.get("port"), Some(&Value::from(case_port(i))), "port of {name}: {map:?}");
                Some(name.clone())
            }
            Some(Value::Null) => {
                let nulls = ["dc", "geo", "port"].iter().all(|k| map.get(*k) == Some(&Value::Null));
                assert!(nulls, "{map:?}");
                None
            }
            _ => panic!("not a host answer: {map:?}"),
        },
        Some(other) => panic!("not a host answer: {other}"),
        None => {
            let text = std::str::from_utf8(response.body.as_bytes()).unwrap_or_default();
            (!text.is_empty()).then(|| text.to_owned())
        }
    };
    let want = if host.is_some() { 200 } else { 404 };
    assert_eq!(response.status, want, "status of an answer naming {host:?}");
    host
}

pub(super) fn error_text(body: &Option<Value>) -> &str {
    body.as_ref().and_then(|b| b.get("error_text")).and_then(Value::as_str).expect("an error without error_text")
}

/// Checks one host of `/hosts` (with its name) or `/status` (without); `port` is the one it is polled on.
pub(super) fn check_host_document(document: &Value, host: &CaseHost, port: u16, view: &View, with_name: bool) {
    let map = document.as_object().unwrap_or_else(|| panic!("a host document is not an object: {document}"));
    let lsn = view.lsn.map(|l| Value::from(l.to_string()));
    let expected = [
        ("host", with_name.then(|| Value::from(host.name.as_str()))),
        ("dc", Some(Value::from(host.dc))),
        ("geo", Some(Value::from(host.geo))),
        ("port", Some(Value::from(port))),
        ("master", Some(Value::from(view.role == Some(Role::Master)))),
        ("alive", Some(Value::from(view.role.is_some()))),
        ("possible_dead", Some(Value::from(host.health == Health::PossiblyDead))),
        ("lag_ms", Some(Value::from(view.lag_ms))),
        ("sync_by_time", Some(Value::from(view.sync_by_time))),
        ("lag_bytes", Some(Value::from(view.lag_bytes))),
        ("sync_by_bytes", Some(Value::from(view.sync_by_bytes))),
        ("lsn", Some(lsn.unwrap_or(Value::Null))),
        ("timeline", Some(Value::from(view.timeline))),
    ];
    let expected: Vec<(&str, Value)> = expected.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    assert_eq!(map.len(), expected.len(), "fields of {}: {document}", host.name);
    for (key, value) in &expected {
        assert_eq!(map.get(*key), Some(value), "{key} of {}: {document}", host.name);
    }
    if let Some(Value::String(lsn)) = map.get("lsn") {
        assert_eq!(&lsn::canonical(lsn.as_bytes()), lsn, "lsn of {} is not canonical", host.name);
    }
}

/// A replica answer in the round robin: the host handed out and the set it was chosen from.
pub(super) struct RoundRobin {
    pub(super) host: usize,
    pub(super) from: Vec<usize>,
}

/// Checks a per-host check's answer: 200 naming host `i` exactly when it `passes` (alive, not possibly dead, a
/// replica admitted by the filters), else 503 with an `error_text` that starts with its name; no cursor move.
pub(super) fn check_per_host(
    case: &HttpCase,
    i: usize,
    passes: bool,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) {
    assert_eq!(cursor.0, cursor.1, "a per-host check moved the cursor");
    let body = check_any_response(response);
    let name = &case.hosts[i].name;
    if passes {
        let named = answered_host(&case.hosts, response, body, json);
        assert_eq!(named.as_deref(), Some(name.as_str()), "a passing per-host check names its host");
    } else {
        assert_eq!(response.status, 503, "a failing per-host check of {name:?}");
        assert!(error_text(&body).starts_with(name.as_str()), "{body:?}");
    }
}

/// Checks a `/replicas` answer: every candidate exactly once, healthy before possibly dead, then by locality
/// (this DC, this region, the rest), each group in host order from the cursor on; the cursor moves past the
/// first entry, and stays without one.
pub(super) fn check_list(
    case: &HttpCase,
    views: &[View],
    wanted: &Wanted,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) {
    let (before, after) = cursor;
    let body = check_any_response(response);
    assert_eq!(response.status, 200, "/replicas");
    let names: Vec<String> = match body {
        Some(Value::Array(items)) => {
            assert_ne!(json, Some(false), "/replicas in JSON without asking");
            items
                .iter()
                .map(|item| {
                    let one = Response {
                        status: 200,
                        content_type: Some(http::JSON),
                        body: http::Body::Owned(item.to_string()),
                        allow: None,
                    };
                    answered_host(&case.hosts, &one, Some(item.clone()), Some(true)).expect("a listed host is named")
                })
                .collect()
        }
        Some(other) => panic!("/replicas is not an array: {other}"),
        None => {
            assert_ne!(json, Some(true), "/replicas in text when JSON was asked for");
            let text = std::str::from_utf8(response.body.as_bytes()).unwrap_or_default();
            assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
            text.lines().map(str::to_owned).collect()
        }
    };
    let got: Vec<usize> = names
        .iter()
        .map(|name| case.hosts.iter().position(|h| h.name == *name).unwrap_or_else(|| panic!("{name:?}")))
        .collect();
    let expected = routes::list(views, &wanted.filter, |j| closeness(case, j), before);
    assert_eq!(got, expected, "/replicas from cursor {before}");
    assert_eq!(after, expected.first().map_or(before, |&j| j + 1), "the cursor after /replicas");
}

/// Checks a selection answer (DESIGN 5) and the cursor's move; returns the round-robin choice, if any.
pub(super) fn check_selection(
    case: &HttpCase,
    views: &[View],
    master: Option<usize>,
    wanted: &Wanted,
    response: &Response,
    json: Option<bool>,
    cursor: (usize, usize),
) -> Option<RoundRobin> {
    let (before, after) = cursor;
    let body = check_any_response(response);
    let named = answered_host(&case.hosts, response, body, json);
    let n = case.hosts.len();
    // Healthy replicas before possibly dead ones; dead and unseen hosts are never candidates.
    let candidates = Some(routes::preferred(views, &wanted.filter)).filter(|c| !c.is_empty());
    let Some(name) = named else {
        assert_eq!(candidates, None, "404 although these replicas match");
        if wanted.fallback {
            assert_eq!(master, None, "404 although there is a master");
        }
        assert_eq!(after, before, "the cursor moved without a round-robin answer");
        return None;
    };
    let i = case.hosts.iter().position(|h| h.name == name).unwrap_or_else(|| panic!("{name:?} is not a host"));
    let host = &case.hosts[i];
    assert!(
        matches!(host.health, Health::Alive | Health::PossiblyDead) && host.last.is_some(),
        "{name:?} is {:?} (seen: {})",
        host.health,
        host.last.is_some()
    );
    let Some(candidates) = candidates else {
        assert!(wanted.fallback, "{name:?} handed out with fallback=none, but no replica matches");
        assert_eq!(Some(i), master, "{name:?} handed out, but no replica matches and it is not the master");
        assert_eq!(after, before, "the cursor moved on a master answer");
        return None;
    };
    assert!(candidates.contains(&i), "{name:?} handed out, but the matching replicas are {candidates:?}");
    if wanted.most_sync {
        assert_eq!(Some(i), routes::most_sync(views, &candidates), "not the most synchronous replica");
        assert_eq!(after, before, "the cursor moved on /most_sync_by_bytes");
        return None;
    }
    // Locality narrows the round robin to the closest non-empty group: same DC, same region, all.
    let local = routes::closest(&candidates, |j| closeness(case, j));
    assert!(local.contains(&i), "{name:?} handed out, but the closest matching replicas are {local:?}");
    // The next candidate after the last host handed out (cursor = its index + 1; 0 before the first).
    if before <= n {
        assert_eq!(Some(i), routes::next(&local, before, n), "round robin from cursor {before} among {local:?}");
    }
    assert_eq!(after, i + 1, "the cursor after handing out host {i}");
    Some(RoundRobin { host: i, from: local })
}
