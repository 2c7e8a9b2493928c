//! Shared helpers of the integration tests: where the binary is, sidecar builders for clusters and proxies,
//! and a soft-assertion collector that reports every mismatch of a table-driven test at once.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use pg_status_tests::{Node, PgStatus, PgStatusBuilder, Proxy};

/// How long a fresh pg-status may take to listen and to become ready.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The default polling interval of these tests.
pub const SLEEP_MS: u64 = 100;
/// The default iteration deadline of these tests.
pub const QUERY_TIMEOUT_MS: u64 = 1000;
/// The default `max_fails` of these tests.
pub const MAX_FAILS: u32 = 3;

/// Scheduling slack for a loaded 2-core CI machine.
pub const SLACK: Duration = Duration::from_millis(2500);

/// The binary under test.
pub fn bin() -> PathBuf {
    pg_status_tests::runner::binary(option_env!("CARGO_BIN_EXE_pg-status-under-test"))
        .expect("the pg-status binary to test")
}

/// A builder for the binary with fast test timing.
pub fn builder() -> PgStatusBuilder {
    PgStatusBuilder::new(&bin()).expect("builder").timing(SLEEP_MS, QUERY_TIMEOUT_MS, MAX_FAILS)
}

/// A builder monitoring `nodes`, in that order, by address with a `pg_port` list.
pub fn for_nodes(nodes: &[&Node]) -> PgStatusBuilder {
    let hosts: Vec<(String, u16)> = nodes.iter().map(|n| (n.host(), n.port())).collect();
    builder().hosts(&hosts)
}

/// A builder monitoring `proxies`, in that order.
pub fn for_proxies(proxies: &[&Proxy]) -> PgStatusBuilder {
    let hosts: Vec<(String, u16)> = proxies.iter().map(|p| (p.host(), p.port())).collect();
    builder().hosts(&hosts)
}

/// Spawns and waits until `/ready` answers 200.
pub fn start_ready(builder: PgStatusBuilder) -> PgStatus {
    let p = builder.spawn().expect("pg-status starts");
    p.wait_listening(STARTUP).expect("pg-status listens");
    p.wait_ready(STARTUP).expect("pg-status becomes ready");
    p
}

/// Waits (up to [`STARTUP`]) until plain `GET path` answers 200 with `body`: right after start-up a host's
/// first poll may have failed on a loaded machine, so tests settle instead of asserting at once.
pub fn settle(p: &PgStatus, path: &str, body: &str) {
    p.wait_for_body(path, body, STARTUP).unwrap_or_else(|e| panic!("{e}\n{}", p.output_dump()));
}

/// Plain-text body of `GET path`, asserting status 200.
pub fn plain_200(p: &PgStatus, path: &str) -> String {
    let r = p.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path} answered {r}");
    r.text()
}

/// Collects failed checks and reports them all together at the end of a test.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
    count: usize,
}

impl Checks {
    /// An empty collector.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records a failure unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.count += 1;
        if !ok {
            self.failures.push(what());
        }
    }

    /// Records a failure unless `actual == expected`.
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, actual: T, expected: T) {
        self.count += 1;
        if actual != expected {
            self.failures.push(format!("{what}: expected {expected:?}, got {actual:?}"));
        }
    }

    /// Panics with every recorded failure, if any.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!("{} of {} checks failed:\n  - {}", self.failures.len(), self.count, self.failures.join("\n  - "));
        }
    }
}
