//! The pure request handler: `(snapshot, cursor, method, target, Accept) -> Response` (DESIGN 0, 5-7).
//!
//! The HTTP server, the simulation and the fuzzer all call [`handle`]; it never blocks, never panics, and
//! answers the hot routes without allocating beyond reference-count increments. The round-robin cursor is
//! the caller's: it passes the same one to every request, one request at a time.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{ReplicaFallback, SplitBrainPolicy};
use crate::host_index::HostIndex;
use crate::lsn::Lsn;
use crate::metrics;
use crate::render::push_json_str;
use crate::select::{self, candidates, select, Choice, Cursor, Filter, Pick, Refusal, Rejection};
use crate::snapshot::{HostStatus, Snapshot};

/// The crate version, answered by `/version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `Content-Type` of plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";

/// An answer body, shared with the snapshot where possible so hot routes do not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// A fixed text.
    Static(&'static str),
    /// Text owned by the snapshot (a host name or a pre-rendered document).
    Shared(Arc<str>),
    /// Text made for this answer.
    Owned(String),
}

impl Body {
    /// The body's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => b"",
            Body::Static(s) => s.as_bytes(),
            Body::Shared(s) => s.as_bytes(),
            Body::Owned(s) => s.as_bytes(),
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header value; `None` for an empty body, which has no type (DESIGN 7).
    pub content_type: Option<&'static str>,
    /// Body.
    pub body: Body,
    /// Value of an `Allow` header, sent with 405.
    pub allow: Option<&'static str>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Body) -> Response {
        let content_type = (body != Body::Empty).then_some(content_type);
        Response { status, content_type, body, allow: None }
    }

    fn error(status: u16, text: &'static str) -> Response {
        Response::new(status, JSON, Body::Static(text))
    }
}

/// The routes pg-status answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/master`.
    Master,
    /// `/replica`.
    Replica,
    /// `/sync_by_time`.
    SyncByTime,
    /// `/sync_by_bytes`.
    SyncByBytes,
    /// `/sync_by_time_or_bytes`.
    SyncByTimeOrBytes,
    /// `/sync_by_time_and_bytes`.
    SyncByTimeAndBytes,
    /// `/most_sync_by_bytes`.
    MostSyncByBytes,
    /// `/replicas`: every qualifying replica, in preference order.
    Replicas,
    /// `/hosts`.
    Hosts,
    /// `/status`.
    Status,
    /// `/version`.
    Version,
    /// `/live`.
    Live,
    /// `/ready`.
    Ready,
    /// `/metrics`: the Prometheus text exposition ([`crate::metrics`]).
    Metrics,
}

impl Route {
    /// Every route, for metrics and tests.
    pub const ALL: [Route; 14] = [
        Route::Master,
        Route::Replica,
        Route::SyncByTime,
        Route::SyncByBytes,
        Route::SyncByTimeOrBytes,
        Route::SyncByTimeAndBytes,
        Route::MostSyncByBytes,
        Route::Replicas,
        Route::Hosts,
        Route::Status,
        Route::Version,
        Route::Live,
        Route::Ready,
        Route::Metrics,
    ];

    /// The route of a request path, if it is one of ours.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/master" => Route::Master,
            "/replica" => Route::Replica,
            "/sync_by_time" => Route::SyncByTime,
            "/sync_by_bytes" => Route::SyncByBytes,
            "/sync_by_time_or_bytes" => Route::SyncByTimeOrBytes,
            "/sync_by_time_and_bytes" => Route::SyncByTimeAndBytes,
            "/most_sync_by_bytes" => Route::MostSyncByBytes,
            "/replicas" => Route::Replicas,
            "/hosts" => Route::Hosts,
            "/status" => Route::Status,
            "/version" => Route::Version,
            "/live" => Route::Live,
            "/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            _ => return None,
        })
    }

    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Master => "/master",
            Route::Replica => "/replica",
            Route::SyncByTime => "/sync_by_time",
            Route::SyncByBytes => "/sync_by_bytes",
            Route::SyncByTimeOrBytes => "/sync_by_time_or_bytes",
            Route::SyncByTimeAndBytes => "/sync_by_time_and_bytes",
            Route::MostSyncByBytes => "/most_sync_by_bytes",
            Route::Replicas => "/replicas",
            Route::Hosts => "/hosts",
            Route::Status => "/status",
            Route::Version => "/version",
            Route::Live => "/live",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
        }
    }

    fn needs_ready(self) -> bool {
        // Metrics say whether the sidecar is ready rather than refusing to answer.
        !matches!(self, Route::Version | Route::Live | Route::Metrics)
    }

    fn is_selection(self) -> bool {
        matches!(
            self,
            Route::Replica
                | Route::SyncByTime
                | Route::SyncByBytes
                | Route::SyncByTimeOrBytes
                | Route::SyncByTimeAndBytes
                | Route::MostSyncByBytes
                | Route::Replicas
        )
    }
}

const NOT_READY: &str = r#"{"error_text": "pg_monitor is not ready"}"#;
const INVALID_LAG_MS: &str = r#"{"error_text": "Invalid lag_ms"}"#;
const INVALID_LAG_BYTES: &str = r#"{"error_text": "Invalid lag_bytes"}"#;
const INVALID_MIN_LSN: &str = r#"{"error_text": "Invalid min_lsn"}"#;
const INVALID_WAIT_MS: &str = r#"{"error_text": "Invalid wait_ms"}"#;
const INVALID_FALLBACK: &str = r#"{"error_text": "Invalid fallback"}"#;
const NO_HOST_PARAM: &str = r#"{"error_text": "Get parameter 'host' wasn't passed"}"#;
const HOST_NULL: &str = r#"{"host": null, "dc": null, "geo": null, "port": null}"#;

/// What a selection request wants to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// One host to use (the replica routes).
    One,
    /// Whether this host, by index, is what the route accepts (`host=`: a per-host health check).
    Check(HostIndex),
    /// Every qualifying replica in preference order (`/replicas`).
    List,
}

/// A selection request, validated and ready to be answered (possibly more than once while it waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The route asked for.
    pub route: Route,
    /// Its filter, with defaults from the global thresholds already applied.
    pub filter: Filter,
    /// Round robin or most synchronous.
    pub pick: Pick,
    /// Answer in JSON.
    pub json: bool,
    /// How long the caller is willing to wait for a replica that satisfies `min_lsn`, in milliseconds
    /// (already capped by `pg_status__max_wait_ms`; 0 when not asked for or without `min_lsn`).
    pub wait_ms: u64,
    /// Whether to answer with the master when no replica qualifies.
    pub fallback: ReplicaFallback,
    /// One host, a per-host check, or the list.
    pub wanted: Wanted,
}

/// What a request needs: an answer now, a selection that the runtime may hold while replicas catch up, the
/// `/hosts` document, or the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Answer with this.
    Respond(Response),
    /// Answer with [`Selection::answer`], now or after waiting.
    Select(Selection),
    /// Answer with [`metrics::answer`] (`GET` or `HEAD /metrics`): it reads the poller's published
    /// [`metrics::Telemetry`] and the HTTP side's counters besides the snapshot.
    Metrics,
    /// Answer with [`hosts_answer`] of the snapshot's [`Snapshot::hosts_json`] (`GET` or `HEAD /hosts`).
    /// The document changes only with the snapshot, so a runtime may render it once per snapshot.
    Hosts,
}

/// The `/hosts` answer carrying `document`, the [`Snapshot::hosts_json`] of the snapshot being answered from.
pub fn hosts_answer(document: Arc<str>) -> Response {
    Response::new(200, JSON, Body::Shared(document))
}

impl Selection {
    /// Chooses the host (or checks it, or lists the candidates) and renders the answer. The choice is the
    /// host answered: for a check, the checked host when it passes; for a list, its first entry.
    pub fn answer(&self, snapshot: &Snapshot, cursor: &mut Cursor) -> (Choice, Response) {
        match self.wanted {
            Wanted::One => {
                let choice = select(snapshot, &self.filter, self.pick, self.fallback, cursor);
                (choice, host_answer(choice.host().and_then(|i| snapshot.host(i)), self.json))
            }
            Wanted::Check(i) => match select::check(snapshot, &self.filter, i) {
                Ok(()) => (Choice::Replica(i), host_answer(snapshot.host(i), self.json)),
                Err(refusal) => (Choice::Nothing, refused(snapshot, i, refusal)),
            },
            Wanted::List => {
                let list = candidates(snapshot, &self.filter, cursor);
                let choice = list.first().map_or(Choice::Nothing, |&i| Choice::Replica(i));
                (choice, list_answer(snapshot, &list, self.json))
            }
        }
    }

    /// Whether the request is answered from `snapshot` at once rather than held: it asked for no wait, or
    /// a replica already satisfies it. The runtime and the simulation's client both ask this.
    pub fn answer_now(&self, snapshot: &Snapshot) -> bool {
        self.wait_ms == 0 || self.satisfied(snapshot)
    }

    /// Whether a replica satisfies the request in `snapshot` (so a waiting request can be answered); for a
    /// per-host check, whether that host passes.
    pub fn satisfied(&self, snapshot: &Snapshot) -> bool {
        match self.wanted {
            Wanted::Check(i) => select::check(snapshot, &self.filter, i).is_ok(),
            Wanted::One | Wanted::List => {
                snapshot.hosts.iter().any(|h| h.alive() && h.is_replica() && self.filter.accepts(h))
            }
        }
    }
}

/// Answers a request in full from the snapshot alone, without waiting (DESIGN 0 and 5-7). `/metrics` is
/// answered as though nothing else had been published: no poll statistics and no requests counted.
pub fn handle(snapshot: &Snapshot, cursor: &mut Cursor, method: &str, target: &str, accept: Option<&[u8]>) -> Response {
    match prepare(snapshot, method, target, accept) {
        Prepared::Respond(response) => response,
        Prepared::Select(selection) => selection.answer(snapshot, cursor).1,
        Prepared::Metrics => metrics::answer_unpublished(snapshot),
        Prepared::Hosts => hosts_answer(snapshot.hosts_json().into()),
    }
}

/// Validates a request and answers everything that needs no host choice; selection routes come back as a
/// [`Selection`] so the runtime can answer them at once or after a wait, `/hosts` as [`Prepared::Hosts`]
/// and `/metrics` as [`Prepared::Metrics`].
pub fn prepare(snapshot: &Snapshot, method: &str, target: &str, accept: Option<&[u8]>) -> Prepared {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    let Some(route) = Route::from_path(path) else {
        return Prepared::Respond(Response::new(404, TEXT, Body::Empty));
    };
    if method != "GET" && method != "HEAD" {
        let mut response = Response::new(405, TEXT, Body::Empty);
        response.allow = Some("GET, HEAD");
        return Prepared::Respond(response);
    }
    if route.needs_ready() && !snapshot.ready {
        return Prepared::Respond(Response::error(503, NOT_READY));
    }
    let json = accept.is_some_and(accepts_json);
    let respond = |r| Prepared::Respond(r);
    match route {
        Route::Metrics => Prepared::Metrics,
        Route::Live | Route::Ready => respond(Response::new(200, TEXT, Body::Static("OK"))),
        Route::Version if json => {
            respond(Response::new(200, JSON, Body::Owned(format!("{{\"version\": \"{VERSION}\"}}"))))
        }
        Route::Version => respond(Response::new(200, TEXT, Body::Static(VERSION))),
        Route::Hosts => Prepared::Hosts,
        Route::Master => respond(master(snapshot, query, json)),
        Route::Status => respond(status(snapshot, query)),
        _ => match selection(snapshot, route, query, json) {
            Ok(selection) => Prepared::Select(selection),
            Err(response) => respond(response),
        },
    }
}

/// `/master`, or with `host=` the check whether that host is the master; under
/// `pg_status__split_brain=refuse`, 503 naming the claimants while more than one healthy host claims it.
fn master(snapshot: &Snapshot, query: &str, json: bool) -> Response {
    let checked = match param(query, "host") {
        None => None,
        Some(name) => match host_index(snapshot, &name) {
            Some(i) => Some(i),
            None => return Response::new(404, TEXT, Body::Empty),
        },
    };
    let refused = snapshot.refused_claimants();
    if !refused.is_empty() {
        let mut text = String::from("split brain: ");
        for (k, &i) in refused.iter().enumerate() {
            if k > 0 {
                text.push_str(", ");
            }
            text.push_str(snapshot.host(i).map_or("?", |h| &*h.id.name));
        }
        return error_text(503, &text);
    }
    match checked {
        None => host_answer(snapshot.master_status(), json),
        Some(i) if snapshot.master == Some(i) => host_answer(snapshot.host(i), json),
        Some(i) => error_text(503, &format!("{} is not the master", snapshot.host(i).map_or("?", |h| &*h.id.name))),
    }
}

/// The index of the monitored host written exactly as `name`.
fn host_index(snapshot: &Snapshot, name: &[u8]) -> Option<HostIndex> {
    snapshot.hosts.iter().position(|h| h.id.name.as_bytes() == name).map(HostIndex::new)
}

/// A JSON `{"error_text": ...}` answer with text made for it.
fn error_text(status: u16, text: &str) -> Response {
    let mut body = String::with_capacity(text.len() + 20);
    body.push_str("{\"error_text\": ");
    push_json_str(&mut body, text);
    body.push('}');
    Response::new(status, JSON, Body::Owned(body))
}

/// The 503 of a per-host check, saying why the host fails it.
fn refused(snapshot: &Snapshot, i: HostIndex, refusal: Refusal) -> Response {
    let name = snapshot.host(i).map_or("?", |h| &*h.id.name);
    let mut text = String::with_capacity(name.len() + 40);
    text.push_str(name);
    // Writing to a String cannot fail.
    let _ = match refusal {
        Refusal::Dead | Refusal::Filter(Rejection::Unmeasured) => write!(text, " is dead"),
        Refusal::PossiblyDead => write!(text, " is possibly dead"),
        Refusal::NotReplica => write!(text, " is not a replica"),
        Refusal::Filter(Rejection::LagMs(ms)) => write!(text, " lags {ms} ms"),
        Refusal::Filter(Rejection::LagBytes(bytes)) => write!(text, " lags {bytes} bytes"),
        Refusal::Filter(Rejection::LagBoth(ms, bytes)) => write!(text, " lags {ms} ms and {bytes} bytes"),
        Refusal::Filter(Rejection::Behind(Some(lsn))) => write!(text, " has replayed up to {lsn} only"),
        Refusal::Filter(Rejection::Behind(None)) => write!(text, " shows no replay position"),
        Refusal::Filter(Rejection::Timeline(Some(t))) => write!(text, " is on timeline {t}, not the master's"),
        Refusal::Filter(Rejection::Timeline(None)) => write!(text, " shows no timeline"),
    };
    error_text(503, &text)
}

fn status(snapshot: &Snapshot, query: &str) -> Response {
    let Some(host) = param(query, "host") else {
        return Response::error(400, NO_HOST_PARAM);
    };
    match host_index(snapshot, &host).and_then(|i| snapshot.host(i)) {
        Some(h) => Response::new(200, JSON, Body::Owned(snapshot.status_json(h))),
        None => Response::new(404, TEXT, Body::Empty),
    }
}

fn selection(snapshot: &Snapshot, route: Route, query: &str, json: bool) -> Result<Selection, Response> {
    debug_assert!(route.is_selection());
    let number = |name: &str, error: &'static str| -> Result<Option<u64>, Response> {
        param(query, name).map(|v| parse_u64(&v).ok_or_else(|| Response::error(400, error))).transpose()
    };
    let lag_ms = number("lag_ms", INVALID_LAG_MS)?;
    let lag_bytes = number("lag_bytes", INVALID_LAG_BYTES)?;
    let min_lsn = param(query, "min_lsn")
        .map(|v| Lsn::parse_bytes(&v).ok_or_else(|| Response::error(400, INVALID_MIN_LSN)))
        .transpose()?;
    let wait_ms = number("wait_ms", INVALID_WAIT_MS)?;
    let s = &snapshot.settings;
    let fallback = match param(query, "fallback") {
        None => s.replica_fallback,
        Some(value) => ReplicaFallback::from_name(&value).ok_or_else(|| Response::error(400, INVALID_FALLBACK))?,
    };
    let wanted = match (route, param(query, "host")) {
        (Route::Replicas, _) => Wanted::List,
        (_, None) => Wanted::One,
        (_, Some(name)) => match host_index(snapshot, &name) {
            Some(i) => Wanted::Check(i),
            None => return Err(Response::new(404, TEXT, Body::Empty)),
        },
    };
    let (max_lag_ms, max_lag_bytes, either, pick) = match route {
        Route::Replica | Route::Replicas => (lag_ms, lag_bytes, false, Pick::RoundRobin),
        Route::SyncByTime => (Some(lag_ms.unwrap_or(s.sync_max_lag_ms)), None, false, Pick::RoundRobin),
        Route::SyncByBytes => (None, Some(lag_bytes.unwrap_or(s.sync_max_lag_bytes)), false, Pick::RoundRobin),
        Route::SyncByTimeOrBytes | Route::SyncByTimeAndBytes | Route::MostSyncByBytes => (
            Some(lag_ms.unwrap_or(s.sync_max_lag_ms)),
            Some(lag_bytes.unwrap_or(s.sync_max_lag_bytes)),
            route == Route::SyncByTimeOrBytes,
            if route == Route::MostSyncByBytes { Pick::MostSyncByBytes } else { Pick::RoundRobin },
        ),
        _ => (None, None, false, Pick::RoundRobin),
    };
    let wait_ms = if min_lsn.is_some() { wait_ms.unwrap_or(0).min(s.max_wait_ms) } else { 0 };
    // The write behind a `min_lsn` went to the master this snapshot names; trusting timelines, only replicas
    // on its timeline can be compared with it.
    let timeline = match (min_lsn, s.split_brain) {
        (Some(_), SplitBrainPolicy::Timeline) => snapshot.master_status().and_then(|h| h.timeline),
        _ => None,
    };
    let filter = Filter { max_lag_ms, max_lag_bytes, either, min_lsn, timeline };
    Ok(Selection { route, filter, pick, json, wait_ms, fallback, wanted })
}

/// The answer naming a host, or 404 when there is none.
fn host_answer(host: Option<&HostStatus>, json: bool) -> Response {
    match (host, json) {
        (Some(h), false) => Response::new(200, TEXT, Body::Shared(h.id.name.clone())),
        (Some(h), true) => Response::new(200, JSON, Body::Shared(h.id.json.clone())),
        (None, false) => Response::new(404, TEXT, Body::Empty),
        (None, true) => Response::new(404, JSON, Body::Static(HOST_NULL)),
    }
}

/// The `/replicas` answer: a JSON array of host objects, or one host name per line.
fn list_answer(snapshot: &Snapshot, list: &[HostIndex], json: bool) -> Response {
    let hosts = list.iter().filter_map(|&i| snapshot.host(i));
    let mut out = String::with_capacity(list.len() * 64 + 2);
    if json {
        out.push('[');
        for (k, h) in hosts.enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            out.push_str(&h.id.json);
        }
        out.push(']');
        return Response::new(200, JSON, Body::Owned(out));
    }
    for h in hosts {
        out.push_str(&h.id.name);
        out.push('\n');
    }
    let body = if out.is_empty() { Body::Empty } else { Body::Owned(out) };
    Response::new(200, TEXT, body)
}

/// ASCII digits only, fitting in u64.
fn parse_u64(value: &[u8]) -> Option<u64> {
    // No length limit: leading zeros keep a long value within u64, and checked arithmetic catches overflow.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The percent-decoded value of the first occurrence of `name` in a query string (a bare `name` is empty).
fn param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key.as_bytes()) == name.as_bytes()).then(|| percent_decode(value.as_bytes()))
    })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                // Two hex digits make at most 0xFF, so the cast is lossless.
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Whether an `Accept` header lists `application/json` with a non-zero quality (DESIGN 7).
pub fn accepts_json(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|range| {
        let mut parts = range.split(|&b| b == b';');
        let media = parts.next().map(trim).unwrap_or_default();
        if !media.eq_ignore_ascii_case(b"application/json") {
            return false;
        }
        parts.all(|p| {
            let p = trim(p);
            match p.iter().position(|&b| b == b'=') {
                Some(eq) if trim(&p[..eq]).eq_ignore_ascii_case(b"q") => !is_zero_quality(trim(&p[eq + 1..])),
                _ => true,
            }
        })
    })
}

fn is_zero_quality(q: &[u8]) -> bool {
    // A quality of 0, 0., 0.0, 0.00 or 0.000 refuses the type; anything else (even malformed) keeps it.
    match q.split_first() {
        Some((b'0', rest)) => match rest.split_first() {
            None => true,
            Some((b'.', decimals)) => decimals.len() <= 3 && decimals.iter().all(|&d| d == b'0'),
            Some(_) => false,
        },
        _ => false,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}
