//! Builders shared by the core's integration and property tests: those of the reference crate, and the
//! start of a test's clock.
#![allow(dead_code, unused_imports)]

use std::time::Instant;

pub use pg_status_reference::build::*;

/// The instant a test's simulated time starts from.
pub fn start() -> Instant {
    Instant::now()
}

/// Property-test settings with `cases` cases that keep every failing case in `regressions` (a path below
/// the core's directory, `tests/proptest-regressions/<test>.txt`), replayed first on every later run.
/// The files are committed: a failure once found stays a test.
pub fn proptest_config(cases: u32, regressions: &'static str) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::with_cases(cases)
    }
}
