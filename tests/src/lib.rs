//! Test harness for pg-status: real PostgreSQL clusters on loopback, a switchable TCP proxy that can freeze
//! and cut connections, a runner for the pg-status binary, and a raw HTTP/1.1 client.
//!
//! The pieces are independent so that integration tests, a demo command and benchmarks can reuse them:
//! [`pg::Cluster`] starts a primary and streaming replicas, [`proxy::Proxy`] sits between pg-status and a
//! node, [`runner::PgStatus`] runs the binary and captures its output, and [`http`] talks to it.
#![warn(missing_docs)]

pub mod error;
pub mod haproxy;
pub mod hostile;
pub mod http;
pub mod json;
pub mod net;
pub mod pg;
pub mod pgbouncer;
pub mod procfs;
pub mod proxy;
pub mod runner;
pub mod tls;
pub mod wait;

pub use error::{Error, Result};
pub use haproxy::HaProxy;
pub use http::HttpResponse;
pub use pg::{Cluster, ClusterOptions, Node, PgBinaries};
pub use pgbouncer::{PgBouncer, PgBouncerOptions};
pub use proxy::Proxy;
pub use runner::{Lines, PgStatus, PgStatusBuilder};
pub use wait::{wait_until, wait_until_ok};

/// True when the tests run under continuous integration (`CI` is set to anything but empty, `0` or `false`),
/// where nothing may be skipped.
pub fn is_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

/// Finds the PostgreSQL binaries, or returns `None` after printing a loud message when they are missing outside
/// CI. Under CI a missing installation panics, so that a test never silently passes without PostgreSQL.
pub fn postgres_or_skip(test: &str) -> Option<PgBinaries> {
    match PgBinaries::locate() {
        Ok(bins) => Some(bins),
        Err(e) if is_ci() => panic!("{test}: PostgreSQL is required under CI but was not found: {e}"),
        Err(e) => {
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! SKIPPING {test}: PostgreSQL binaries not found ({e}).");
            eprintln!("!!! Install PostgreSQL 15 (apt-get install postgresql-15) or set PG_BINDIR.");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            None
        }
    }
}
