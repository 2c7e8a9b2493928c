//! The reference model of pg-status: what DESIGN.md's decisions 1 to 5 and PostgreSQL's LSN text say the
//! answer is, written out plainly from the design's text and not from the core's code.
//!
//! The core's property tests, the fuzz checks and the simulation's oracle all compare the core with this
//! crate, so a decision that changes is restated in one place. The code here favours being obviously right
//! over being fast or clever: it loops, filters and compares where the core keeps state incrementally. It
//! uses the core's data types (an [`Observation`](pg_status_core::observation::Observation), a
//! [`Health`](pg_status_core::snapshot::Health)) but never its functions that decide, so a core that is
//! consistently wrong still disagrees with it.
//!
//! [`build`] holds the observation, settings and snapshot builders that every test of the core shares.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod build;
pub mod election;
pub mod health;
pub mod lag;
pub mod lsn;
pub mod routes;
pub mod schedule;
pub mod view;

pub use election::Host;
pub use health::History;
pub use view::View;
