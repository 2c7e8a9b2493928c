//! Prometheus metrics: per-host poll statistics the poller publishes ([`Telemetry`]), HTTP request counters the
//! HTTP side keeps, and the text exposition of both together with the current snapshot, which answers the
//! `/metrics` route ([`answer`]). Rendering reads only published state: a scrape never waits for the poller.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::host_index::HostIndex;
use crate::http::{Body, Response, Route, VERSION};
use crate::monitor::{HostCounters, Monitor, PollErrorKind};
use crate::observation::Role;
use crate::snapshot::{Health, Snapshot};

/// Upper bounds of the poll-duration histogram buckets, in seconds.
pub const POLL_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

const KINDS: [PollErrorKind; 6] = [
    PollErrorKind::Connect,
    PollErrorKind::Auth,
    PollErrorKind::Query,
    PollErrorKind::Timeout,
    PollErrorKind::BadReply,
    PollErrorKind::Closed,
];

/// Durations of a host's poll iterations and its failures by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Iterations per bucket of [`POLL_BUCKETS`] (not cumulative); the last slot counts longer ones.
    buckets: [u64; POLL_BUCKETS.len() + 1],
    /// Total duration of all iterations, in microseconds.
    sum_micros: u64,
    /// Number of iterations.
    count: u64,
    /// Failures, indexed like `KINDS`.
    failures: [u64; KINDS.len()],
}

impl PollStats {
    /// Records one finished iteration.
    pub(crate) fn record(&mut self, elapsed: Duration, failure: Option<PollErrorKind>) {
        let secs = elapsed.as_secs_f64();
        let slot = POLL_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(POLL_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum_micros = self.sum_micros.saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        self.count += 1;
        if let Some(kind) = failure {
            if let Some(i) = KINDS.iter().position(|k| *k == kind) {
                self.failures[i] += 1;
            }
        }
    }

    /// Number of iterations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Failures of one kind.
    pub fn failures(&self, kind: PollErrorKind) -> u64 {
        KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.failures[i])
    }
}

/// Status codes counted separately; others are counted as `other`.
const STATUSES: [u16; 7] = [200, 400, 404, 405, 431, 503, 0];

/// HTTP requests by route and status. Plain state: the HTTP side owns it (one thread serves every
/// connection) and passes it in.
#[derive(Debug, Clone, Default)]
pub struct HttpCounters {
    /// Indexed like [`Route::ALL`] (the last row for unknown paths) and status.
    counts: [[u64; STATUSES.len()]; Route::ALL.len() + 1],
}

impl HttpCounters {
    /// Counts one answered request; `route` is `None` for a path that is not ours.
    pub fn record(&mut self, route: Option<Route>, status: u16) {
        let row = route.and_then(|r| Route::ALL.iter().position(|x| *x == r)).unwrap_or(Route::ALL.len());
        let col = STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len() - 1);
        self.counts[row][col] = self.counts[row][col].saturating_add(1);
    }
}

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The `/metrics` answer ([`crate::http::Prepared::Metrics`]): every metric rendered from the published
/// snapshot and telemetry and the requests counted so far, as of `now`.
pub fn answer(snapshot: &Snapshot, telemetry: &Telemetry, http: &HttpCounters, now: Instant) -> Response {
    let text = render(snapshot, telemetry, http, now);
    Response { status: 200, content_type: Some(CONTENT_TYPE), body: Body::Owned(text), allow: None }
}

/// The `/metrics` answer from the snapshot alone, for [`crate::http::handle`]: without telemetry there is
/// no host's last success to measure an age from, so no clock is needed.
pub(crate) fn answer_unpublished(snapshot: &Snapshot) -> Response {
    let text = render_aged(snapshot, &Telemetry::default(), &HttpCounters::default(), &|_| Duration::ZERO);
    Response { status: 200, content_type: Some(CONTENT_TYPE), body: Body::Owned(text), allow: None }
}

/// What the poller publishes for `/metrics` besides the snapshot: per-host counters and poll statistics, and
/// the state of split brain and failover episodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// Per host, in host order.
    pub hosts: Vec<HostTelemetry>,
    /// A split brain is declared (DESIGN 4: on fresh evidence).
    pub split_brain: bool,
    /// A failover episode runs.
    pub episode: bool,
    /// Failover episodes started so far.
    pub episodes_total: u64,
}

/// One host's counters and poll statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTelemetry {
    /// Failures in a row, last success, connections, iterations.
    pub counters: HostCounters,
    /// Poll durations and failure causes.
    pub stats: PollStats,
}

impl Telemetry {
    /// What `monitor` has to publish now.
    pub fn of(monitor: &Monitor) -> Telemetry {
        let hosts = HostIndex::all(monitor.host_count())
            .filter_map(|i| {
                Some(HostTelemetry { counters: monitor.counters(i)?, stats: monitor.poll_stats(i)?.clone() })
            })
            .collect();
        Telemetry {
            hosts,
            split_brain: !monitor.split_brain().is_empty(),
            episode: monitor.in_episode(),
            episodes_total: monitor.episodes_total(),
        }
    }
}

/// Appends a Prometheus label value with `\`, `"` and newlines escaped.
fn push_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render(snapshot: &Snapshot, telemetry: &Telemetry, http: &HttpCounters, now: Instant) -> String {
    render_aged(snapshot, telemetry, http, &|last| now.saturating_duration_since(last))
}

/// [`render`], with `age` telling how long ago a host's last success was.
fn render_aged(
    snapshot: &Snapshot,
    telemetry: &Telemetry,
    http: &HttpCounters,
    age: &dyn Fn(Instant) -> Duration,
) -> String {
    let host = |i: HostIndex| telemetry.hosts.get(i.get());
    let mut out = String::with_capacity(1024 + snapshot.hosts.len() * 1500);
    let hosts = &snapshot.hosts;
    // Writing to a String cannot fail; the results of write! below are ignored for that reason.
    let per_host =
        |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(HostIndex) -> Option<String>| {
            header(out, name, kind, help);
            for (i, h) in HostIndex::all(hosts.len()).zip(hosts) {
                if let Some(v) = value(i) {
                    out.push_str(name);
                    out.push_str("{host=\"");
                    push_label(out, &h.id.name);
                    let _ = writeln!(out, "\"}} {v}");
                }
            }
        };
    let flag = |b: bool| Some(if b { "1" } else { "0" }.to_string());

    header(&mut out, "pg_status_build_info", "gauge", "The running pg-status version.");
    let _ = writeln!(out, "pg_status_build_info{{version=\"{VERSION}\"}} 1");
    header(&mut out, "pg_status_ready", "gauge", "1 once every host has been polled once.");
    let _ = writeln!(out, "pg_status_ready {}", u8::from(snapshot.ready));
    let claims = snapshot.claimed_masters().count();
    header(&mut out, "pg_status_masters", "gauge", "Alive hosts that currently claim to be master.");
    let _ = writeln!(out, "pg_status_masters {claims}");
    header(
        &mut out,
        "pg_status_split_brain",
        "gauge",
        "1 while more than one alive host claims to be master, each confirmed by a fresh poll.",
    );
    let _ = writeln!(out, "pg_status_split_brain {}", u8::from(telemetry.split_brain));
    header(&mut out, "pg_status_failover_episode", "gauge", "1 while a failover episode polls at the fast interval.");
    let _ = writeln!(out, "pg_status_failover_episode {}", u8::from(telemetry.episode));
    header(&mut out, "pg_status_failover_episodes_total", "counter", "Failover episodes started.");
    let _ = writeln!(out, "pg_status_failover_episodes_total {}", telemetry.episodes_total);

    per_host(&mut out, "pg_status_host_up", "gauge", "1 when the host has a usable measurement (alive).", &|i| {
        flag(hosts[i].alive())
    });
    per_host(&mut out, "pg_status_host_master", "gauge", "1 when the host reported itself master.", &|i| {
        flag(hosts[i].role == Some(Role::Master))
    });
    per_host(&mut out, "pg_status_host_elected_master", "gauge", "1 for the host /master answers.", &|i| {
        flag(snapshot.master == Some(i))
    });
    per_host(&mut out, "pg_status_host_possibly_dead", "gauge", "1 after a failed poll, before max_fails.", &|i| {
        flag(hosts[i].health == Health::PossiblyDead)
    });
    per_host(&mut out, "pg_status_host_dead", "gauge", "1 after max_fails consecutive failed polls.", &|i| {
        flag(hosts[i].health == Health::Dead)
    });
    // Prometheus wants base units: the time lag is exported in seconds (as /hosts' lag_ms / 1000).
    per_host(&mut out, "pg_status_host_lag_seconds", "gauge", "Replication delay in seconds.", &|i| {
        hosts[i].lag_ms.map(|v| format!("{}.{:03}", v / 1000, v % 1000))
    });
    per_host(&mut out, "pg_status_host_lag_bytes", "gauge", "Replication lag in bytes.", &|i| {
        hosts[i].lag_bytes.map(|v| v.to_string())
    });
    per_host(&mut out, "pg_status_host_consecutive_failures", "gauge", "Failed polls in a row.", &|i| {
        host(i).map(|h| h.counters.consecutive_failures.to_string())
    });
    per_host(
        &mut out,
        "pg_status_host_last_success_age_seconds",
        "gauge",
        "Seconds since the last successful poll ended.",
        &|i| {
            let last = host(i)?.counters.last_success?;
            Some(format!("{:.3}", age(last).as_secs_f64()))
        },
    );
    per_host(&mut out, "pg_status_host_connections_opened_total", "counter", "Connections opened.", &|i| {
        host(i).map(|h| h.counters.connections_opened.to_string())
    });

    header(&mut out, "pg_status_poll_duration_seconds", "histogram", "Duration of poll iterations.");
    for (i, h) in HostIndex::all(hosts.len()).zip(hosts) {
        let Some(stats) = host(i).map(|h| &h.stats) else { continue };
        let mut label = String::new();
        push_label(&mut label, &h.id.name);
        let mut cumulative = 0;
        for (bound, n) in POLL_BUCKETS.iter().zip(&stats.buckets) {
            cumulative += n;
            let _ =
                writeln!(out, "pg_status_poll_duration_seconds_bucket{{host=\"{label}\",le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "pg_status_poll_duration_seconds_bucket{{host=\"{label}\",le=\"+Inf\"}} {}", stats.count);
        let _ = writeln!(
            out,
            "pg_status_poll_duration_seconds_sum{{host=\"{label}\"}} {:.6}",
            stats.sum_micros as f64 / 1e6
        );
        let _ = writeln!(out, "pg_status_poll_duration_seconds_count{{host=\"{label}\"}} {}", stats.count);
    }

    header(&mut out, "pg_status_poll_failures_total", "counter", "Failed polls by cause.");
    for (i, h) in HostIndex::all(hosts.len()).zip(hosts) {
        let Some(stats) = host(i).map(|h| &h.stats) else { continue };
        let mut label = String::new();
        push_label(&mut label, &h.id.name);
        for (kind, n) in KINDS.iter().zip(&stats.failures) {
            let _ = writeln!(out, "pg_status_poll_failures_total{{host=\"{label}\",cause=\"{}\"}} {n}", kind.as_str());
        }
    }

    header(&mut out, "pg_status_http_requests_total", "counter", "HTTP requests by route and status.");
    // Unknown paths come before `/metrics`, as they always have.
    let other = Route::ALL.len();
    let metrics = Route::ALL.iter().position(|r| *r == Route::Metrics).unwrap_or(other);
    let rows = (0..other).filter(|&row| row != metrics).chain([other, metrics]);
    for row in rows {
        let route = Route::ALL.get(row).map_or("other", |r| r.path());
        for (count, status) in http.counts[row].iter().zip(STATUSES) {
            let n = *count;
            if n > 0 {
                let status = if status == 0 { "other".to_string() } else { status.to_string() };
                let _ = writeln!(out, "pg_status_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
    }
    out
}
