//! Real PostgreSQL clusters for tests: a primary and streaming replicas, each on its own loopback address, port
//! and data directory, stopped by [`Cluster`]'s `Drop` even when a test panics.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, every server program runs as the `postgres`
//! OS user through `runuser`, and the cluster's directory belongs to that user.
//!
//! [`binaries`] finds the server programs and runs them, [`cluster`] is the guard that starts and stops a
//! cluster, [`node`] one server of it, and [`helpers`] what tests do with a node (load, LSN text, waiting).

use std::time::Duration;

pub mod binaries;
pub mod cluster;
pub mod helpers;
pub mod node;

pub use binaries::PgBinaries;
pub use cluster::{Cluster, ClusterOptions};
pub use helpers::{create_load_table, format_lsn, parse_lsn, wait_accepting, write_rows, Writer};
pub use node::{Node, Session};

/// The `application_name` of the harness's own SQL sessions, so that tests can tell them apart from pg-status's
/// connections in `pg_stat_activity`.
pub const HARNESS_APPLICATION_NAME: &str = "pg-status-tests-harness";

/// The database user of every cluster (pg-status's default user).
pub const USER: &str = "postgres";

/// How long server start, stop, promotion and base backups may take.
pub(crate) const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
