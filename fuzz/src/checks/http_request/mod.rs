//! Target `http_request`: a request answered from a snapshot derived from fuzzed hosts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_status_core::http::{self, Prepared, Response};
use pg_status_core::lsn::Lsn;
use pg_status_core::metrics;
use pg_status_core::snapshot::{Health, HostInput, HostName, HostSpec, HostTimes, Snapshot};
use pg_status_core::HostIndex;
use pg_status_reference::{election, routes, View};
use serde_json::Value;

mod answers;
pub mod decode;
mod expect;

use answers::{
    answered_host, check_any_response, check_host_document, check_list, check_per_host, check_selection, error_text,
};
use decode::{decode_http, HttpCase};
use expect::{case_port, reference_hosts, reference_json, reference_request, reference_views, Expected};

/// Target `http_request`. Input: a request and a snapshot, see [`decode::decode_http`].
///
/// Checks: the snapshot derived from the hosts elects the master of DESIGN 4 and shows the lag and flags
/// of DESIGN 1 and 3 (with observation times, a replica's time lag is bounded by the master's WAL
/// history), and [`Snapshot::update`] after one host changed gives the same snapshot; [`http::handle`] never panics and answers each route as DESIGN 0 and 5-7 say (status,
/// content type, body; every JSON body parses); a selection route hands out only an alive replica that
/// satisfies the request's filters as read from the query, healthy before possibly dead, the closest by
/// locality, in round-robin order or the most synchronous, and otherwise the elected master or 404; a
/// round robin repeated over a stable set hands out each member floor(k/m) or ceil(k/m) times;
/// [`http::prepare`] agrees with [`http::handle`].
pub fn check_http_request(data: &[u8]) {
    let case = decode_http(data);
    let ids: Vec<Arc<HostName>> = case
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Arc::new(HostName::new(HostSpec {
                name: &h.name,
                port: case_port(i),
                dc: h.dc,
                geo: h.geo,
                current_dc: case.current_dc,
                current_geo: case.current_geo,
            }))
        })
        .collect();
    let inputs: Vec<HostInput<'_>> =
        case.hosts.iter().zip(&ids).map(|(h, id)| HostInput { id, health: h.health, last: h.last.as_ref() }).collect();
    let start = Instant::now();
    let instant = |ms: u64| start + Duration::from_millis(ms);
    let histories: Vec<Vec<(Instant, Lsn)>> =
        case.hosts.iter().map(|h| h.wal_history.iter().map(|&(at, lsn)| (instant(at), lsn)).collect()).collect();
    let times: Vec<HostTimes<'_>> = match case.timed {
        true => case
            .hosts
            .iter()
            .zip(&histories)
            .map(|(h, history)| HostTimes { observed_at: h.observed_at.map(instant), wal_history: history })
            .collect(),
        false => Vec::new(),
    };
    let snapshot = match case.timed {
        true => Snapshot::derive_timed(case.ready, &inputs, &times, case.settings),
        false => Snapshot::derive(case.ready, &inputs, case.settings),
    };

    // An incremental update after one host changed equals a full derivation: each host in turn starts from
    // "not polled yet" in a not-ready snapshot.
    for changed in HostIndex::all(inputs.len()) {
        let mut earlier = inputs.clone();
        earlier[changed] = HostInput { id: &ids[changed], health: Health::Unknown, last: None };
        let mut updated = Snapshot::derive_timed(false, &earlier, &times, case.settings);
        updated.update(case.ready, &inputs, &times, changed);
        assert_eq!(updated, snapshot, "Snapshot::update after host {changed} changed");
        assert_eq!(updated.hosts_json(), snapshot.hosts_json(), "/hosts after updating host {changed}");
    }

    let master = election::master(&reference_hosts(&case), case.settings.split_brain);
    assert_eq!(snapshot.master.map(HostIndex::get), master, "elected master");
    let views = reference_views(&case);
    assert_eq!(snapshot.hosts.len(), views.len());
    for ((status, view), host) in snapshot.hosts.iter().zip(&views).zip(&case.hosts) {
        assert_eq!(&View::of(status), view, "{:?} in the snapshot", host.name);
        assert_eq!(status.alive(), view.role.is_some());
        assert_eq!(status.health, host.health);
        assert_eq!(&*status.id.name, host.name.as_str());
        assert_eq!(status.id.local_dc, case.current_dc.is_some() && host.dc == case.current_dc);
        assert_eq!(status.id.local_geo, case.current_geo.is_some() && host.geo == case.current_geo);
    }

    let accept = case.accept.as_deref();
    let json = reference_json(accept);
    if let (Some(json), Some(accept)) = (json, accept) {
        assert_eq!(http::accepts_json(accept), json, "JSON for Accept: {:?}", String::from_utf8_lossy(accept));
    }
    let expected = reference_request(&case);
    let mut cursor = case.cursor;
    let prepared = http::prepare(&snapshot, &case.method, &case.target, accept);
    let response = http::handle(&snapshot, &mut cursor, &case.method, &case.target, accept);
    let after = cursor;

    if matches!(expected, Expected::Metrics) {
        assert_eq!(prepared, Prepared::Metrics, "/metrics");
        assert_eq!(after, case.cursor, "the cursor moved on /metrics");
        assert_eq!((response.status, response.content_type), (200, Some(metrics::CONTENT_TYPE)), "/metrics");
        let ready = format!("pg_status_ready {}", u8::from(case.ready));
        let text = String::from_utf8_lossy(response.body.as_bytes());
        assert!(text.lines().any(|l| l == ready), "/metrics without {ready:?}:\n{text}");
        return;
    }
    let Expected::Select(wanted) = expected else {
        assert_eq!(after, case.cursor, "the cursor moved on {expected:?}");
        let prepared_answer = match prepared {
            // The document a runtime renders once per snapshot is the one `handle` renders for each request.
            Prepared::Hosts if matches!(expected, Expected::Hosts) => http::hosts_answer(snapshot.hosts_json().into()),
            Prepared::Respond(answer) => answer,
            other => panic!("{expected:?} was prepared as {other:?}"),
        };
        assert_eq!(prepared_answer, response, "prepare and handle disagree");
        check_plain_route(&case, &views, master, &expected, &response, json);
        return;
    };
    let Prepared::Select(selection) = prepared else {
        panic!("{expected:?} was answered at once: {prepared:?}");
    };
    assert_eq!(selection.wait_ms, wanted.wait_ms, "wait_ms");
    let satisfied = match wanted.check {
        Some(i) => routes::passes_check(&views[i], &wanted.filter),
        None => !routes::preferred(&views, &wanted.filter).is_empty(),
    };
    assert_eq!(selection.satisfied(&snapshot), satisfied, "Selection::satisfied");
    if let Some(i) = wanted.check {
        check_per_host(&case, i, satisfied, &response, json, (case.cursor, after));
        return;
    }
    if wanted.list {
        check_list(&case, &views, &wanted, &response, json, (case.cursor, after));
        return;
    }

    let Some(first) = check_selection(&case, &views, master, &wanted, &response, json, (case.cursor, after)) else {
        return;
    };
    // The same request again, 2m + 1 times over the same m candidates: each twice or three times.
    let m = first.from.len();
    let mut counts = vec![0usize; views.len()];
    let mut before = after;
    for _ in 0..2 * m + 1 {
        let response = http::handle(&snapshot, &mut cursor, &case.method, &case.target, accept);
        let after = cursor;
        let chosen = check_selection(&case, &views, master, &wanted, &response, json, (before, after))
            .expect("a repeated round robin stopped handing out replicas");
        assert_eq!(chosen.from, first.from, "the candidates changed in a stable snapshot");
        counts[chosen.host] += 1;
        before = after;
    }
    for &j in &first.from {
        assert!(
            matches!(counts[j], 2 | 3),
            "round robin over {:?} (first {}): counts {counts:?}",
            first.from,
            first.host
        );
    }
}

/// Checks the answer of a route that chooses no replica.
fn check_plain_route(
    case: &HttpCase,
    views: &[View],
    master: Option<usize>,
    expected: &Expected,
    response: &Response,
    json: Option<bool>,
) {
    let body = check_any_response(response);
    let status = response.status;
    match expected {
        Expected::UnknownPath | Expected::WrongMethod => {
            let want = if matches!(expected, Expected::UnknownPath) { 404 } else { 405 };
            assert_eq!(status, want, "{expected:?}");
            assert!(response.body.as_bytes().is_empty(), "{expected:?} with a body");
            if status == 405 {
                assert_eq!(response.allow, Some("GET, HEAD"));
            }
        }
        Expected::NotReady => {
            assert_eq!(status, 503, "before readiness");
            assert_eq!(error_text(&body), "pg_monitor is not ready");
        }
        Expected::Okay => {
            assert_eq!((status, response.body.as_bytes()), (200, &b"OK"[..]));
        }
        Expected::Version => {
            assert_eq!(status, 200, "/version");
            match &body {
                Some(document) => assert_eq!(document, &Value::from_iter([("version", http::VERSION)])),
                None => assert_eq!(response.body.as_bytes(), http::VERSION.as_bytes()),
            }
            if let Some(json) = json {
                assert_eq!(body.is_some(), json, "/version format");
            }
        }
        Expected::Hosts => {
            assert_eq!(status, 200, "/hosts");
            let list = body.as_ref().and_then(Value::as_array).expect("/hosts is not a JSON array");
            assert_eq!(list.len(), case.hosts.len(), "/hosts length");
            for (i, ((document, host), view)) in list.iter().zip(&case.hosts).zip(views).enumerate() {
                check_host_document(document, host, case_port(i), view, true);
            }
        }
        Expected::Master(checked) => {
            let refused = election::refused_claimants(&reference_hosts(case), case.settings.split_brain);
            if !refused.is_empty() {
                let names: Vec<&str> = refused.iter().map(|&i| case.hosts[i].name.as_str()).collect();
                assert_eq!(status, 503, "/master in a refused split brain");
                assert_eq!(error_text(&body), format!("split brain: {}", names.join(", ")));
                return;
            }
            match checked {
                Some(i) if master != Some(*i) => {
                    assert_eq!(status, 503, "/master?host= of a host that is not the master");
                    assert_eq!(error_text(&body), format!("{} is not the master", case.hosts[*i].name));
                }
                _ => {
                    let named = answered_host(&case.hosts, response, body, json);
                    assert_eq!(named.as_deref(), master.map(|m| case.hosts[m].name.as_str()), "/master");
                }
            }
        }
        Expected::UnknownHost => {
            assert_eq!((status, response.body.as_bytes()), (404, &b""[..]), "host= naming an unknown host");
        }
        Expected::Status(None) => {
            assert_eq!(status, 400, "/status without host");
            error_text(&body);
        }
        Expected::Status(Some(name)) => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
            Some(i) => {
                assert_eq!(status, 200, "/status of a host");
                let document = body.expect("/status answers JSON");
                check_host_document(&document, &case.hosts[i], case_port(i), &views[i], false);
            }
            None => assert_eq!((status, response.body.as_bytes()), (404, &b""[..]), "/status of an unknown host"),
        },
        Expected::Invalid(text) => {
            assert_eq!(status, 400, "{text}");
            assert_eq!(body, Some(Value::from_iter([("error_text", *text)])), "error body");
        }
        Expected::Select(_) | Expected::Metrics => unreachable!("checked before the plain routes"),
    }
}
