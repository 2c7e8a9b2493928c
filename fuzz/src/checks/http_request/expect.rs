//! What the design says a request should get: its route, parameters and format (DESIGN 0, 5-7), and each
//! host's view and the route's filter from the reference.

use pg_status_core::config::ReplicaFallback;
use pg_status_core::select::Filter;
use pg_status_reference::view::{self, Timing};
use pg_status_reference::{lsn, routes, Host, View};

use super::decode::HttpCase;

// http_request: what the design says

/// The case's hosts as the reference takes them.
pub(super) fn reference_hosts(case: &HttpCase) -> Vec<Host<'_>> {
    case.hosts.iter().map(|h| Host { health: h.health, last: h.last.as_ref() }).collect()
}

/// The port the case's host `i` is polled on.
pub(super) fn case_port(i: usize) -> u16 {
    5432 + u16::try_from(i).unwrap_or(0)
}

/// Decisions 1, 3 and 7 from the reference: what each host shows, with the observation times and WAL
/// histories when the case has them.
pub(super) fn reference_views(case: &HttpCase) -> Vec<View> {
    let timing: Vec<Timing<'_>> =
        case.hosts.iter().map(|h| Timing { observed_at_ms: h.observed_at, wal_history: &h.wal_history }).collect();
    view::views(&reference_hosts(case), &case.settings, case.timed.then_some(timing.as_slice()))
}

/// How close host `j` of the case is, for locality (see [`routes::closeness`]).
pub(super) fn closeness(case: &HttpCase, j: usize) -> u8 {
    let h = &case.hosts[j];
    let local_dc = case.current_dc.is_some() && h.dc == case.current_dc;
    let local_geo = case.current_geo.is_some() && h.geo == case.current_geo;
    routes::closeness(&case.settings, local_dc, local_geo)
}

/// The replicas a selection route may hand out (DESIGN 5), as read from the request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    /// The route's filter, from the reference (thresholds, global defaults, `min_lsn`, timeline).
    pub(super) filter: Filter,
    /// `/most_sync_by_bytes` rather than round robin.
    pub(super) most_sync: bool,
    /// What `wait_ms` should come to: capped by `max_wait_ms`, and 0 without `min_lsn`.
    pub(super) wait_ms: u64,
    /// Fall back to the master when no replica qualifies.
    pub(super) fallback: bool,
    /// `host=` on a route that names one host: check that host (by index) instead of choosing.
    pub(super) check: Option<usize>,
    /// `/replicas`: list every candidate.
    pub(super) list: bool,
}

/// What a request should get (DESIGN 0 and 5-7).
#[derive(Debug)]
pub(super) enum Expected {
    /// Not one of our paths: 404, empty body.
    UnknownPath,
    /// A method other than GET or HEAD: 405 with `Allow: GET, HEAD`.
    WrongMethod,
    /// 503 until every host was polled once.
    NotReady,
    /// `/live` and `/ready`: 200 `OK`.
    Okay,
    /// `/version`.
    Version,
    /// `/hosts`.
    Hosts,
    /// `/master`, with the host index of `host=` when given.
    Master(Option<usize>),
    /// `host=` naming a host that is not monitored: 404, empty body.
    UnknownHost,
    /// `/status` with this `host` parameter, if given.
    Status(Option<Vec<u8>>),
    /// 400 with this `error_text`.
    Invalid(&'static str),
    /// A replica choice.
    Select(Wanted),
    /// `/metrics`, answered ready or not.
    Metrics,
}

/// The paths pg-status serves besides the replica routes.
pub(super) const OTHER_ROUTES: [&str; 8] =
    ["/replicas", "/master", "/hosts", "/status", "/version", "/live", "/ready", "/metrics"];

/// `%XX` escapes decoded; a `%` without two hex digits after it is kept as it is.
pub(super) fn unescape(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex_digit(*h).zip(hex_digit(*l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// DESIGN 6: the decoded value of the first `name=value` pair whose decoded name is `name`; a pair without
/// `=` has an empty value.
pub(super) fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (key, value) = match pair.find('=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, ""),
        };
        (unescape(key) == name.as_bytes()).then(|| unescape(value))
    })
}

/// DESIGN 6: ASCII digits only, and the value fits in u64.
pub(super) fn query_number(query: &str, name: &str) -> Result<Option<u64>, ()> {
    match query_param(query, name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()).map(Some).ok_or(())
        }
        Some(_) => Err(()),
    }
}

pub(super) fn reference_request(case: &HttpCase) -> Expected {
    let (path, query) = match case.target.find('?') {
        Some(q) => (&case.target[..q], &case.target[q + 1..]),
        None => (case.target.as_str(), ""),
    };
    if !routes::REPLICA_ROUTES.contains(&path) && !OTHER_ROUTES.contains(&path) {
        return Expected::UnknownPath;
    }
    if case.method != "GET" && case.method != "HEAD" {
        return Expected::WrongMethod;
    }
    if path == "/metrics" {
        return Expected::Metrics;
    }
    if !case.ready && path != "/live" && path != "/version" {
        return Expected::NotReady;
    }
    match path {
        "/live" | "/ready" => return Expected::Okay,
        "/version" => return Expected::Version,
        "/hosts" => return Expected::Hosts,
        "/master" => {
            return match query_param(query, "host") {
                None => Expected::Master(None),
                Some(name) => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
                    Some(i) => Expected::Master(Some(i)),
                    None => Expected::UnknownHost,
                },
            }
        }
        "/status" => return Expected::Status(query_param(query, "host")),
        _ => {}
    }
    let Ok(lag_ms) = query_number(query, "lag_ms") else { return Expected::Invalid("Invalid lag_ms") };
    let Ok(lag_bytes) = query_number(query, "lag_bytes") else { return Expected::Invalid("Invalid lag_bytes") };
    let min_lsn = match query_param(query, "min_lsn") {
        None => None,
        Some(v) => match lsn::parse(&v) {
            Some(lsn) => Some(lsn),
            None => return Expected::Invalid("Invalid min_lsn"),
        },
    };
    // `wait_ms` (how long a `min_lsn` request may wait for a replica to catch up) is validated last.
    let Ok(wait_ms) = query_number(query, "wait_ms") else { return Expected::Invalid("Invalid wait_ms") };
    let s = &case.settings;
    let fallback = match query_param(query, "fallback").as_deref() {
        None => s.replica_fallback == ReplicaFallback::Master,
        Some(b"master") => true,
        Some(b"none") => false,
        Some(_) => return Expected::Invalid("Invalid fallback"),
    };
    let list = path == "/replicas";
    let check = match query_param(query, "host") {
        Some(name) if !list => match case.hosts.iter().position(|h| h.name.as_bytes() == name.as_slice()) {
            Some(i) => Some(i),
            None => return Expected::UnknownHost,
        },
        _ => None,
    };
    let filter = routes::filter(path, lag_ms, lag_bytes, min_lsn, &reference_hosts(case), s);
    Expected::Select(Wanted {
        filter,
        most_sync: path == "/most_sync_by_bytes",
        wait_ms: if min_lsn.is_some() { wait_ms.unwrap_or(0).min(s.max_wait_ms) } else { 0 },
        fallback,
        check,
        list,
    })
}

/// RFC 9110's qvalue in thousandths: `0[.ddd]` or `1[.000]`; `None` when malformed.
pub(super) fn qvalue(q: &[u8]) -> Option<u32> {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &q[q.len()..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac.iter().chain(b"000").take(3).fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

pub(super) fn ows_trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// DESIGN 7: JSON when the Accept header lists `application/json` (any case, any parameters, among other
/// types) with a quality above 0. `None` when the header is too malformed for the design to decide: a
/// malformed or repeated `q`, quoted strings, or line breaks and other unusual white space.
pub(super) fn reference_json(accept: Option<&[u8]>) -> Option<bool> {
    let Some(accept) = accept else { return Some(false) };
    if accept.iter().any(|b| matches!(b, b'"' | b'\r' | b'\n' | 0x0B | 0x0C)) {
        return None;
    }
    let mut unsure = false;
    for range in accept.split(|&b| b == b',') {
        let mut parts = range.split(|&b| b == b';');
        if !ows_trim(parts.next().unwrap_or_default()).eq_ignore_ascii_case(b"application/json") {
            continue;
        }
        let qs: Vec<&[u8]> = parts
            .filter_map(|p| {
                let p = ows_trim(p);
                let eq = p.iter().position(|&b| b == b'=')?;
                ows_trim(&p[..eq]).eq_ignore_ascii_case(b"q").then(|| ows_trim(&p[eq + 1..]))
            })
            .collect();
        match qs.as_slice() {
            [] => return Some(true),
            [q] => match qvalue(q) {
                Some(0) => {}
                Some(_) => return Some(true),
                None => unsure = true,
            },
            _ => unsure = true,
        }
    }
    if unsure {
        None
    } else {
        Some(false)
    }
}

pub(super) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
