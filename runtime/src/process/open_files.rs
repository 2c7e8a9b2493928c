//! The open-file limit: every HTTP client and every database connection is a file descriptor.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit on open files to the hard limit and returns the new soft limit.
///
/// The usual soft default (1,024) is far below what thousands of keep-alive clients need, while the hard
/// limit is typically much higher and any process may raise itself to it. An unlimited hard limit is left
/// alone: Linux refuses an unlimited soft limit for open files.
pub fn raise_open_files() -> std::io::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    let Some(maximum) = limit.maximum else { return Ok(limit.current) };
    if limit.current.is_some_and(|current| current >= maximum) {
        return Ok(limit.current);
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(maximum), maximum: Some(maximum) })?;
    Ok(Some(maximum))
}
