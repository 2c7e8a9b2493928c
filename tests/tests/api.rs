//! The HTTP API against a real idle cluster (a primary and two caught-up replicas): every route in both
//! formats, the parameter rules and errors, `/hosts` and `/status`, `/version`, `/live`, `/ready`, methods,
//! unknown paths and `Accept` negotiation.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{for_nodes, start_ready, Checks, STARTUP};
use pg_status_reference::routes::REPLICA_ROUTES;
use pg_status_tests::pg::parse_lsn;
use pg_status_tests::{http, json, postgres_or_skip, Cluster, ClusterOptions, PgStatus};
use serde_json::{json, Value};

const JSON: Option<&str> = Some("application/json");

/// Routes that read `lag_ms` (the spec says `/sync_by_bytes` ignores it).
const LAG_MS_ROUTES: [&str; 5] =
    ["/replica", "/sync_by_time", "/sync_by_time_or_bytes", "/sync_by_time_and_bytes", "/most_sync_by_bytes"];

/// Routes that read `lag_bytes` (the spec says `/sync_by_time` ignores it).
const LAG_BYTES_ROUTES: [&str; 5] =
    ["/replica", "/sync_by_bytes", "/sync_by_time_or_bytes", "/sync_by_time_and_bytes", "/most_sync_by_bytes"];

/// The field order of a `/hosts` entry: the spec's, with `possible_dead` after `alive` (DESIGN 7).
const HOSTS_FIELDS: [&str; 9] =
    ["host", "master", "alive", "possible_dead", "lag_ms", "sync_by_time", "lag_bytes", "sync_by_bytes", "lsn"];

/// The keys of each object restricted to the spec's fields, in the order they appear: extra fields (the
/// spec does not forbid them) are ignored, the order of the spec's fields is checked.
fn spec_keys(text: &str) -> Vec<Vec<String>> {
    json::object_keys(text)
        .unwrap_or_default()
        .into_iter()
        .map(|keys| keys.into_iter().filter(|k| HOSTS_FIELDS.contains(&k.as_str())).collect())
        .collect()
}

/// The entry restricted to the spec's fields.
fn spec_fields(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| HOSTS_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn get(p: &PgStatus, path: &str, accept: Option<&str>) -> http::HttpResponse {
    p.get_accept(path, accept).unwrap_or_else(|e| panic!("GET {path} (Accept {accept:?}): {e}"))
}

/// Checks a plain-text answer: status, `text/plain` content type (none for an empty body), exact body.
fn plain(c: &mut Checks, p: &PgStatus, path: &str, status: u16, body: &str) {
    let r = get(p, path, None);
    c.eq(&format!("GET {path} plain: status"), r.status, status);
    c.eq(&format!("GET {path} plain: body"), r.text(), body.to_owned());
    let want = if body.is_empty() { None } else { Some("text/plain; charset=utf-8") };
    c.eq(&format!("GET {path} plain: content type"), r.header("content-type"), want);
}

/// A host answer in JSON: the host with its data centre and region (none configured here) and its port.
fn host_json(host: Option<(&str, u16)>) -> Value {
    json!({ "host": host.map(|h| h.0), "dc": null, "geo": null, "port": host.map(|h| h.1) })
}

/// Checks a JSON answer: status, `application/json` content type, body equal as JSON.
fn json_is(c: &mut Checks, p: &PgStatus, path: &str, accept: Option<&str>, status: u16, body: Value) {
    let r = get(p, path, accept);
    c.eq(&format!("GET {path} (Accept {accept:?}): status"), r.status, status);
    c.eq(&format!("GET {path} (Accept {accept:?}): content type"), r.content_type(), "application/json".into());
    match r.json() {
        Ok(v) => c.eq(&format!("GET {path} (Accept {accept:?}): body"), v, body),
        Err(e) => c.check(false, || format!("GET {path} (Accept {accept:?}): body is not JSON: {e}")),
    }
}

/// Checks a 400 with the JSON error body, in plain and JSON modes alike.
fn bad_request(c: &mut Checks, p: &PgStatus, path: &str, error: &str) {
    for accept in [None, JSON] {
        json_is(c, p, path, accept, 400, json!({ "error_text": error }));
    }
}

/// Counts which hosts `n` plain requests to `path` return.
fn tally(p: &PgStatus, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = get(p, path, None);
        let key = if r.status == 200 { r.text() } else { format!("<{}>", r.status) };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

#[test]
fn routes_formats_parameters_and_errors() {
    let Some(bins) = postgres_or_skip("routes_formats_parameters_and_errors") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let (mh, r1h, r2h) = (m.host(), r1.host(), r2.host());
    cluster.wait_caught_up(STARTUP).expect("replicas caught up");

    // Default user and password (postgres/postgres) are used: the builder sets neither.
    let p = start_ready(for_nodes(&[m, r1, r2]));
    // Let every host be polled since the cluster went idle, so both replicas show no lag.
    for h in [&r1h, &r2h] {
        p.wait_for_host(h, STARTUP, |e| e["lag_bytes"] == 0 && e["lag_ms"] == 0 && e["alive"] == true)
            .expect("replica in sync");
    }
    common::settle(&p, "/master", &mh);
    let mut c = Checks::new();

    // /master in both formats.
    plain(&mut c, &p, "/master", 200, &mh);
    json_is(&mut c, &p, "/master", JSON, 200, host_json(Some((&mh, m.port()))));
    plain(&mut c, &p, "/master?unknown=1&lag_ms=abc", 200, &mh);

    // Round robin over the two replicas, with one cursor shared by every round-robin route.
    let mut sequence = Vec::new();
    for path in ["/replica", "/sync_by_time", "/sync_by_bytes", "/sync_by_time_or_bytes", "/sync_by_time_and_bytes"]
        .iter()
        .cycle()
        .take(10)
    {
        let r = get(&p, path, None);
        c.eq(&format!("GET {path}: status"), r.status, 200);
        sequence.push(r.text());
    }
    for pair in sequence.windows(2) {
        c.check(pair[0] != pair[1] && [&r1h, &r2h].contains(&&pair[0]), || {
            format!("round robin shared by the routes alternates between {r1h} and {r2h}: got {sequence:?}")
        });
    }
    // JSON mode of every replica route.
    for path in REPLICA_ROUTES {
        let r = get(&p, path, JSON);
        c.eq(&format!("GET {path} json: status"), r.status, 200);
        let v = r.json().unwrap_or(Value::Null);
        c.check(v == host_json(Some((&r1h, r1.port()))) || v == host_json(Some((&r2h, r2.port()))), || {
            format!("GET {path} json: got {v}")
        });
    }
    // /most_sync_by_bytes is deterministic: equal lag, so host order decides.
    c.eq("/most_sync_by_bytes x4", tally(&p, "/most_sync_by_bytes", 4), BTreeMap::from([(r1h.clone(), 4)]));

    // Parameters that every replica satisfies keep round robin among replicas.
    for path in [
        "/replica?lag_ms=0",
        "/replica?lag_bytes=0",
        "/replica?lag_ms=0&lag_bytes=0",
        "/replica?min_lsn=0/0",
        "/replica?min_lsn=0%2F0",
        "/replica?lag_ms=1&lag_ms=abc",
        "/replica?foo=bar",
        "/replica?lag_ms=%31%30&lag_bytes=%30",
        "/sync_by_time?lag_ms=0",
        "/sync_by_bytes?lag_bytes=0",
        "/sync_by_time_or_bytes?lag_ms=0&lag_bytes=0",
        "/sync_by_time_and_bytes?lag_ms=0&lag_bytes=0",
        "/sync_by_time_and_bytes?min_lsn=0/1",
    ] {
        c.eq(path, tally(&p, path, 4), BTreeMap::from([(r1h.clone(), 2), (r2h.clone(), 2)]));
    }
    c.eq(
        "/most_sync_by_bytes?lag_bytes=0&lag_ms=0",
        tally(&p, "/most_sync_by_bytes?lag_bytes=0&lag_ms=0", 2),
        BTreeMap::from([(r1h.clone(), 2)]),
    );

    // An LSN no replica has reached: every route falls back to the master, in both formats.
    for route in REPLICA_ROUTES {
        for lsn in ["FFFFFFFF/FFFFFFFF", "ffffffff%2Fffffffff", "FFFFFFFF/0"] {
            let path = format!("{route}?min_lsn={lsn}");
            plain(&mut c, &p, &path, 200, &mh);
        }
        json_is(&mut c, &p, &format!("{route}?min_lsn=FFFFFFFF/FFFFFFFF"), JSON, 200, host_json(Some((&mh, m.port()))));
    }

    // Invalid parameters: 400 with a JSON error whatever the Accept header.
    let bad_numbers = ["-1", "abc", "1.5", "", "%201", "+1", "1e3", "0x10", "18446744073709551616", "1%00"];
    for route in LAG_MS_ROUTES {
        for v in bad_numbers {
            bad_request(&mut c, &p, &format!("{route}?lag_ms={v}"), "Invalid lag_ms");
        }
    }
    for route in LAG_BYTES_ROUTES {
        for v in bad_numbers {
            bad_request(&mut c, &p, &format!("{route}?lag_bytes={v}"), "Invalid lag_bytes");
        }
    }
    let bad_lsns = ["0/", "/0", "0", "", "G/0", "0/G", "123456789/0", "0/123456789", "0/0/0", "-1/0", "0x1/0", "%2F"];
    for route in REPLICA_ROUTES {
        for v in bad_lsns {
            bad_request(&mut c, &p, &format!("{route}?min_lsn={v}"), "Invalid min_lsn");
        }
    }
    // The largest values are valid.
    let path = "/replica?lag_ms=18446744073709551615&lag_bytes=18446744073709551615&min_lsn=00000000/00000000";
    let r = get(&p, path, None);
    c.check(r.status == 200 && (r.text() == r1h || r.text() == r2h), || format!("GET {path}: got {r}"));
    // Validation order: lag_ms, then lag_bytes, then min_lsn; the first occurrence of a parameter counts.
    bad_request(&mut c, &p, "/replica?min_lsn=x&lag_bytes=x&lag_ms=x", "Invalid lag_ms");
    bad_request(&mut c, &p, "/replica?min_lsn=x&lag_bytes=x", "Invalid lag_bytes");
    bad_request(&mut c, &p, "/sync_by_time_and_bytes?lag_ms=1&min_lsn=x&lag_bytes=x", "Invalid lag_bytes");
    bad_request(&mut c, &p, "/replica?lag_ms=abc&lag_ms=1", "Invalid lag_ms");

    // /hosts: JSON whatever the Accept header, entries in host order with the spec's field order.
    for accept in [None, JSON, Some("text/plain")] {
        let r = get(&p, "/hosts", accept);
        c.eq(&format!("/hosts (Accept {accept:?}): status"), r.status, 200);
        c.eq(&format!("/hosts (Accept {accept:?}): content type"), r.content_type(), "application/json".into());
        let keys = spec_keys(&r.text());
        let expected_keys: Vec<Vec<String>> =
            (0..3).map(|_| HOSTS_FIELDS.iter().map(|s| s.to_string()).collect()).collect();
        c.eq("/hosts field order", keys, expected_keys);
        let Ok(Value::Array(items)) = r.json() else {
            c.check(false, || format!("/hosts is not a JSON array: {}", r.text()));
            continue;
        };
        let names: Vec<Value> = items.iter().map(|h| h["host"].clone()).collect();
        c.eq("/hosts host order", names, vec![json!(mh), json!(r1h), json!(r2h)]);
        if let [mi, ri1, ri2] = &items[..] {
            for (entry, master) in [(mi, true), (ri1, false), (ri2, false)] {
                let h = entry["host"].as_str().unwrap_or("?");
                c.eq(&format!("/hosts {h}.master"), &entry["master"], &json!(master));
                c.eq(&format!("/hosts {h}.alive"), &entry["alive"], &json!(true));
                c.eq(&format!("/hosts {h}.possible_dead"), &entry["possible_dead"], &json!(false));
                c.eq(&format!("/hosts {h}.lag_ms"), &entry["lag_ms"], &json!(0));
                c.eq(&format!("/hosts {h}.lag_bytes"), &entry["lag_bytes"], &json!(0));
                c.eq(&format!("/hosts {h}.sync_by_time"), &entry["sync_by_time"], &json!(true));
                c.eq(&format!("/hosts {h}.sync_by_bytes"), &entry["sync_by_bytes"], &json!(true));
                let lsn = entry["lsn"].as_str().and_then(parse_lsn);
                c.check(lsn.is_some(), || format!("/hosts {h}.lsn is a HEX/HEX LSN: {}", entry["lsn"]));
            }
            // Idle and caught up: every host reports the same WAL position.
            c.eq("/hosts replica lsn == master lsn", &ri1["lsn"], &mi["lsn"]);
            c.eq("/hosts replica lsn == master lsn", &ri2["lsn"], &mi["lsn"]);
        }
    }
    // The master's reported LSN is its real one (idle cluster).
    let real = m.current_wal_lsn().expect("current lsn");
    let reported = p.host_entry(&mh).expect("entry")["lsn"].as_str().and_then(parse_lsn);
    c.eq("/hosts master lsn equals pg_current_wal_lsn()", reported, Some(real));

    // /status: JSON object of one host, the /hosts fields without "host".
    for accept in [None, JSON] {
        let r = get(&p, &format!("/status?host={r1h}"), accept);
        c.eq("/status?host=replica: status", r.status, 200);
        c.eq("/status content type", r.content_type(), "application/json".into());
        let keys = spec_keys(&r.text());
        c.eq("/status field order", keys, vec![HOSTS_FIELDS[1..].iter().map(|s| s.to_string()).collect()]);
        let v = r.json().unwrap_or(Value::Null);
        c.eq("/status master", &v["master"], &json!(false));
        c.eq("/status alive", &v["alive"], &json!(true));
        c.eq("/status lag_bytes", &v["lag_bytes"], &json!(0));
        c.eq("/status sync_by_bytes", &v["sync_by_bytes"], &json!(true));
    }
    let st = get(&p, &format!("/status?host={mh}"), None).json().unwrap_or(Value::Null);
    c.eq("/status?host=master: master", &st["master"], &json!(true));
    bad_request(&mut c, &p, "/status", "Get parameter 'host' wasn't passed");
    bad_request(&mut c, &p, "/status?hots=x", "Get parameter 'host' wasn't passed");
    for accept in [None, JSON] {
        let r = get(&p, "/status?host=no-such-host", accept);
        c.eq(&format!("/status?host=unknown (Accept {accept:?})"), (r.status, r.text()), (404, String::new()));
        c.eq("/status?host=unknown: no content type", r.header("content-type"), None);
    }

    // /version, /live, /ready.
    let version = env!("CARGO_PKG_VERSION");
    plain(&mut c, &p, "/version", 200, version);
    json_is(&mut c, &p, "/version", JSON, 200, json!({ "version": version }));
    plain(&mut c, &p, "/live", 200, "OK");
    plain(&mut c, &p, "/ready", 200, "OK");

    // Unknown paths: 404, empty body, in both formats and for any method.
    for (path, accept) in [("/nope", None), ("/nope", JSON), ("/", None), ("/masterx", None), ("/master/x", JSON)] {
        let r = get(&p, path, accept);
        c.eq(&format!("GET {path} (Accept {accept:?}): status"), r.status, 404);
        c.eq(&format!("GET {path} (Accept {accept:?}): body"), r.text(), String::new());
        c.eq(&format!("GET {path} (Accept {accept:?}): no content type"), r.header("content-type"), None);
    }
    // Known paths with other methods: 405 with Allow: GET, HEAD.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/master", "/replica", "/hosts", "/status?host=x", "/version", "/ready"] {
            let r = http::request(p.addr(), method, path, &[], Duration::from_secs(5)).expect("request");
            c.eq(&format!("{method} {path}: status"), r.status, 405);
            c.eq(&format!("{method} {path}: Allow"), r.header("allow").map(str::to_owned), Some("GET, HEAD".into()));
        }
    }
    let r = http::request(p.addr(), "POST", "/nope", &[], Duration::from_secs(5)).expect("request");
    c.eq("POST /nope: status", r.status, 404);
    // HEAD answers like GET, without a body.
    for path in ["/master", "/hosts", "/version", "/live"] {
        let r = http::request(p.addr(), "HEAD", path, &[], Duration::from_secs(5)).expect("HEAD");
        c.eq(&format!("HEAD {path}: status"), r.status, 200);
        let get_len = get(&p, path, None).body.len().to_string();
        if let Some(len) = r.header("content-length") {
            c.eq(&format!("HEAD {path}: Content-Length as GET"), len.to_owned(), get_len);
        }
    }

    // Accept negotiation: JSON when application/json is listed with q > 0.
    for (accept, want_json) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("text/html, application/json;q=0.9", true),
        ("text/plain;q=1, application/json;q=0.1", true),
        ("application/json;q=0.001", true),
        ("text/html,application/xhtml+xml,application/json;q=0.5,*/*;q=0.1", true),
        ("application/json;q=0", false),
        ("application/json;q=0.0", false),
        ("application/json; q=0.000", false),
        ("*/*", false),
        ("text/plain", false),
        ("application/*", false),
        ("application/jsonp", false),
        ("", false),
    ] {
        let r = get(&p, "/master", Some(accept));
        c.eq(&format!("/master Accept {accept:?}: status"), r.status, 200);
        let body = if want_json { host_json(Some((&mh, m.port()))).to_string() } else { mh.clone() };
        let got = if want_json { r.json().map(|v| v.to_string()).unwrap_or_else(|_| r.text()) } else { r.text() };
        c.eq(&format!("/master Accept {accept:?}: body"), got, body);
    }

    // A second pg-status that sees only the replicas and a host that never answers: no master, 404 bodies,
    // and a dead host in /hosts.
    let dead_ip = pg_status_tests::net::next_loopback();
    let dead_port = pg_status_tests::net::free_port(dead_ip).expect("port");
    let hosts = [(r1h.clone(), r1.port()), (r2h.clone(), r2.port()), (dead_ip.to_string(), dead_port)];
    let q = start_ready(common::builder().hosts(&hosts));
    // Possibly dead at its first failures, dead at the max_fails-th.
    q.wait_for_host(&dead_ip.to_string(), STARTUP, |e| e["alive"] == false && e["possible_dead"] == false)
        .expect("dead host");
    for h in [&r1h, &r2h] {
        q.wait_for_host(h, STARTUP, |e| e["alive"] == true && e["lsn"].is_string()).expect("replica polled");
    }
    plain(&mut c, &q, "/master", 404, "");
    json_is(&mut c, &q, "/master", JSON, 404, host_json(None));
    for route in REPLICA_ROUTES {
        plain(&mut c, &q, &format!("{route}?min_lsn=FFFFFFFF/FFFFFFFF"), 404, "");
        json_is(&mut c, &q, &format!("{route}?min_lsn=FFFFFFFF/FFFFFFFF"), JSON, 404, host_json(None));
    }
    // The dead host is never returned.
    let seen = tally(&q, "/replica", 6);
    c.eq("/replica never returns the dead host", seen, BTreeMap::from([(r1h.clone(), 3), (r2h.clone(), 3)]));
    let r = get(&q, "/hosts", None);
    let keys = spec_keys(&r.text());
    c.eq("/hosts with a dead host: field order", keys.get(2).cloned(), Some(HOSTS_FIELDS.map(String::from).to_vec()));
    let dead = q.host_entry(&dead_ip.to_string()).expect("dead entry");
    c.eq(
        "/hosts dead entry",
        spec_fields(&dead),
        json!({"host": dead_ip.to_string(), "master": false, "alive": false, "possible_dead": false,
               "lag_ms": null, "sync_by_time": false, "lag_bytes": null, "sync_by_bytes": false, "lsn": null}),
    );
    let st = get(&q, &format!("/status?host={dead_ip}"), None);
    c.eq("/status dead host: status", st.status, 200);
    c.eq(
        "/status dead host: body",
        spec_fields(&st.json().unwrap_or(Value::Null)),
        json!({"master": false, "alive": false, "possible_dead": false, "lag_ms": null, "sync_by_time": false,
               "lag_bytes": null, "sync_by_bytes": false, "lsn": null}),
    );
    drop(q);

    // A third pg-status naming hosts as host:port with spaces around the items: responses name each host
    // exactly as written (trimmed).
    let m_entry = format!("{}:{}", mh, m.port());
    let r1_entry = format!("{}:{}", r1h, r1.port());
    let s = start_ready(
        common::builder().env("pg_status__hosts", format!(" {m_entry} , {r1_entry}")).without("pg_status__pg_port"),
    );
    common::settle(&s, "/master", &m_entry);
    common::settle(&s, "/replica", &r1_entry);
    let names: Vec<Value> = s.hosts().expect("hosts").iter().map(|h| h["host"].clone()).collect();
    c.eq("host:port names in /hosts", names, vec![json!(m_entry), json!(r1_entry)]);

    drop(s);

    // Ports from pg_status__pg_port: one for every host, or exactly one per host; a list of another length
    // stops pg-status (exit 2) with one line naming the variable and both counts. Proxies on separate
    // addresses share a port to show the single port.
    let pa = pg_status_tests::Proxy::start(m.addr()).expect("proxy");
    let ipb = pg_status_tests::net::next_loopback();
    let pb = pg_status_tests::Proxy::start_on((ipb, 0).into(), r1.addr()).expect("proxy");
    let ipc = pg_status_tests::net::next_loopback();
    let pc = pg_status_tests::Proxy::start_on((ipc, pb.port()).into(), r2.addr()).expect("proxy on the same port");
    let t = start_ready(
        common::builder()
            .env("pg_status__hosts", format!("{},{},{}", pa.host(), pb.host(), pc.host()))
            .env("pg_status__pg_port", format!("{},{},{}", pa.port(), pb.port(), pc.port())),
    );
    for h in [pb.host(), pc.host()] {
        let e = t.wait_for_host(&h, STARTUP, |e| e["alive"] == true && e["lsn"].is_string());
        c.check(e.is_ok(), || format!("one pg_port per host ({h}): {e:?}"));
    }
    common::settle(&t, "/master", &pa.host());
    drop(t);
    let mut short = common::builder()
        .env("pg_status__hosts", format!("{},{},{}", pa.host(), pb.host(), pc.host()))
        .env("pg_status__pg_port", format!("{},{}", pa.port(), pb.port()))
        .spawn()
        .expect("spawn");
    let status = short.wait_exit(Duration::from_secs(10)).map(|s| s.code());
    c.eq("a pg_port list shorter than the hosts: exit status", status.ok().flatten(), Some(2));
    let lines = short.stderr().texts();
    c.check(
        lines.len() == 1 && lines[0].contains("pg_status__pg_port") && lines[0].contains("2 ports for 3 hosts"),
        || format!("one line naming the variable and both counts: {lines:?}"),
    );
    let u = start_ready(
        common::builder()
            .env("pg_status__hosts", format!("{},{}", pb.host(), pc.host()))
            .env("pg_status__pg_port", pb.port()),
    );
    for h in [pb.host(), pc.host()] {
        let e = u.wait_for_host(&h, STARTUP, |e| e["alive"] == true && e["master"] == false);
        c.check(e.is_ok(), || format!("one pg_port for every host ({h}): {e:?}"));
    }
    c.finish();
}
