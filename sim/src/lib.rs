//! pg-status-sim: deterministic simulation of pg-status.
//!
//! The real poll driver ([`pg_status::poller::driver::Driver`]) and the real PostgreSQL client (tokio-postgres) run
//! inside a turmoil simulation against simulated PostgreSQL servers ([`pgwire`]) that answer from a cluster
//! model ([`model`]), the ground truth. A scenario ([`scenario`]) scripts what happens to the cluster and the
//! network; an oracle ([`oracle`]) checks DESIGN.md's invariants at every step by asking the pure request
//! handler what a client would be told. Every run is a seed, and a failing run prints the command that
//! replays it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod model;
pub mod oracle;
pub mod pgwire;
pub mod reader;
pub mod rng;
pub mod run;
pub mod runtime;
pub mod scenario;
mod world;
