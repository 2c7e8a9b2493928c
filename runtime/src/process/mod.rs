//! The process around the two threads: start-up and shutdown, signals, the open-file limit, logging, and
//! the `healthcheck` command.

pub mod healthcheck;
pub mod log;
pub mod open_files;
pub(crate) mod program;
pub mod signals;
