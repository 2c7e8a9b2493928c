//! How a log line is presented: the level `pg_status__log_level` filters it at, the stream it goes to and
//! its plain-text prefix. The monitor's events ([`crate::monitor::Event::severity`]) and the program's own
//! lines share these definitions, so the runtime's log only formats and writes.

use crate::config::LogLevel;

/// The standard stream a line belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: what the sidecar sees and does.
    Out,
    /// Standard error: what went wrong.
    Err,
}

/// The kinds of log line, each with one level, stream and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Detail for debugging (per-poll results, selection fallbacks), on stdout.
    Debug,
    /// Start-up, shutdown, host transitions and readiness, on stdout.
    Info,
    /// Worth a warning (shown at `warning`) but written on stdout without a prefix, with the transitions it
    /// belongs to: split brain and failover episodes.
    Notice,
    /// A warning on stderr, prefixed `warning: `.
    Warning,
    /// An error that names what failed first (a failed poll: `<host>: poll failed ...`), on stderr without a
    /// prefix.
    Failure,
    /// An error the program survives, on stderr, prefixed `error: `.
    Error,
    /// An error that stops the program, on stderr, prefixed `error: `; shown at every level.
    Fatal,
    /// A refused configuration or command line, on stderr at every level, without a prefix (the line names
    /// the variable first).
    Refusal,
}

impl Severity {
    /// The level `pg_status__log_level` compares with: the line is shown when this is at or above it.
    pub fn level(self) -> LogLevel {
        match self {
            Severity::Debug => LogLevel::Debug,
            Severity::Info => LogLevel::Info,
            Severity::Notice | Severity::Warning => LogLevel::Warning,
            Severity::Failure | Severity::Error => LogLevel::Error,
            Severity::Fatal | Severity::Refusal => LogLevel::Fatal,
        }
    }

    /// The stream the line is written to.
    pub fn stream(self) -> Stream {
        match self {
            Severity::Debug | Severity::Info | Severity::Notice => Stream::Out,
            Severity::Warning | Severity::Failure | Severity::Error | Severity::Fatal | Severity::Refusal => {
                Stream::Err
            }
        }
    }

    /// What a plain-text line starts with before its message (JSON lines carry the level instead).
    pub fn prefix(self) -> &'static str {
        match self {
            Severity::Warning => "warning: ",
            Severity::Error | Severity::Fatal => "error: ",
            Severity::Debug | Severity::Info | Severity::Notice | Severity::Failure | Severity::Refusal => "",
        }
    }
}
