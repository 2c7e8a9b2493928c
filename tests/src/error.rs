//! The harness's error type.

use std::time::Duration;

/// Everything that can go wrong while setting up or driving a test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (initdb, pg_ctl, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, as text.
        status: String,
        /// Its captured output (and, for servers, the tail of the server log).
        output: String,
    },
    /// A condition did not become true in time.
    #[error("timed out after {after:?} waiting for {what}{}", last.as_ref().map(|l| format!(" (last seen: {l})")).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        after: Duration,
        /// The last observation or error, to explain the failure.
        last: Option<String>,
    },
    /// A SQL statement failed.
    #[error("SQL on {node} failed: {sql}: {source}")]
    Sql {
        /// The node the statement ran on.
        node: String,
        /// The statement.
        sql: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// A SQL result had an unexpected shape or value.
    #[error("unexpected SQL result from {node}: {detail}")]
    SqlResult {
        /// The node the statement ran on.
        node: String,
        /// What was wrong.
        detail: String,
    },
    /// An HTTP exchange failed or the reply could not be parsed.
    #[error("HTTP: {0}")]
    Http(String),
    /// A JSON body could not be parsed.
    #[error("invalid JSON ({source}): {body}")]
    Json {
        /// The body that failed to parse.
        body: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The environment is not usable (missing binaries, missing OS user, ...).
    #[error("environment: {0}")]
    Environment(String),
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

/// Adds context to `std::io::Result`s.
pub trait IoContext<T> {
    /// Turns the I/O error into [`Error::Io`] described by `context`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}
