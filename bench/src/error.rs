//! The benchmark's error type.

/// Everything that stops a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The test harness failed (cluster, pg-status process, HTTP client).
    #[error("{0}")]
    Harness(#[from] pg_status_tests::Error),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the benchmark was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A load generator or server program is missing or exited unsuccessfully.
    #[error("{tool}: {detail}")]
    Tool {
        /// The program.
        tool: String,
        /// What went wrong, with its output.
        detail: String,
    },
    /// A program's output could not be understood.
    #[error("cannot read the output of {tool}: {detail}")]
    Parse {
        /// The program.
        tool: String,
        /// What was missing or malformed.
        detail: String,
    },
    /// pg-status answered something the benchmark did not expect before load started.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A `/proc` file could not be read or parsed.
    #[error("/proc/{pid}/{file}: {detail}")]
    Proc {
        /// The process.
        pid: u32,
        /// The file under `/proc/PID`.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The command line is not understood.
    #[error("{0}")]
    Usage(String),
}

/// The benchmark's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the benchmark was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}
