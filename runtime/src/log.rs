//! Log lines: transitions and notices on stdout, errors on stderr, one flushed line at a time.
//!
//! Tests and operators read stdout line by line while the program runs, so every line is flushed at once.
//! Write errors (a closed pipe) are ignored: logging must never stop the sidecar.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use pg_status_core::config::LogLevel;
use pg_status_core::monitor::{Event, PollError, PollId};
use pg_status_core::observation::Observation;

use crate::driver::EventLog;

/// Writes log lines to stdout and stderr, filtered by the configured level (`pg_status__log_level`):
///
/// - `debug`: everything below, and per-poll detail (host, iteration, duration, role and WAL positions or
///   the error) and replica routes answered with the master or nothing for lack of a matching replica;
/// - `info` (the default): the start-up and shutdown lines, host transitions, readiness and split brain on
///   stdout; failed polls, warnings and errors on stderr;
/// - `warning`: no info lines: split brain (stdout), failed polls, warnings and errors (stderr);
/// - `error`: failed polls and errors only;
/// - `fatal`: only what stops the program (a configuration it refuses, a port it cannot listen on).
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    level: LogLevel,
}

impl Logger {
    /// A logger that prints what `level` asks for.
    pub fn new(level: LogLevel) -> Logger {
        Logger { level }
    }

    /// Whether lines of `level` are printed.
    pub fn enabled(&self, level: LogLevel) -> bool {
        self.level <= level
    }

    /// An informational line on stdout: start-up, shutdown, host transitions.
    pub fn info(&self, line: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Info) {
            out(line);
        }
    }

    /// Detail for debugging, on stdout.
    pub fn debug(&self, line: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Debug) {
            out(line);
        }
    }

    /// A warning on stderr, prefixed with `warning: `.
    pub fn warning(&self, line: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Warning) {
            err(format_args!("warning: {line}"));
        }
    }

    /// An error the program survives, on stderr, prefixed with `error: `.
    pub fn error(&self, line: fmt::Arguments<'_>) {
        if self.enabled(LogLevel::Error) {
            err(format_args!("error: {line}"));
        }
    }

    /// An error that stops the program, on stderr, prefixed with `error: `; printed at every level.
    pub fn fatal(&self, line: fmt::Arguments<'_>) {
        err(format_args!("error: {line}"));
    }
}

impl EventLog for Logger {
    fn event(&mut self, event: &Event) {
        match event {
            Event::PollFailed { .. } => {
                if self.enabled(LogLevel::Error) {
                    err(format_args!("{event}"));
                }
            }
            // Several hosts claiming to be master is worth a warning, but stays on stdout where it always was.
            Event::SplitBrain { .. } | Event::SplitBrainEnded => {
                if self.enabled(LogLevel::Warning) {
                    out(format_args!("{event}"));
                }
            }
            Event::Transition { .. } | Event::Ready => self.info(format_args!("{event}")),
            Event::Warning { .. } => self.warning(format_args!("{event}")),
        }
    }

    fn poll_finished(&mut self, host: &str, id: PollId, elapsed: Duration, result: &Result<Observation, PollError>) {
        if !self.enabled(LogLevel::Debug) {
            return;
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        match result {
            Ok(o) => out(format_args!(
                "{host}: poll {} ok in {ms:.1} ms: {:?}, current {}, received {}, replayed {}, replay delay {} ms, timeline {}",
                id.iteration,
                o.role,
                show(o.current_lsn),
                show(o.receive_lsn),
                show(o.replay_lsn),
                show(o.replay_delay_ms),
                show(o.timeline),
            )),
            Err(e) => {
                out(format_args!("{host}: poll {} failed in {ms:.1} ms ({}): {e}", id.iteration, e.kind.as_str()))
            }
        }
    }
}

/// A value or `null`.
fn show<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// One line on stdout, flushed.
pub(crate) fn out(line: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// One line on stderr (unbuffered).
pub(crate) fn err(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
