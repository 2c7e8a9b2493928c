//! Bounded polling: every wait in the harness ends with a timeout error instead of hanging.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How often the wait helpers re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`.
///
/// `what` names the condition in the timeout error.
pub fn wait_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout, last: None });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, for at most `timeout`.
///
/// The last error (or the last rejected value's description) is kept in the timeout error, so a failing test
/// says what it saw instead of only that it waited.
pub fn wait_until_ok<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> std::result::Result<T, E>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout, last: Some(last) });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
