//! What a running process costs, read from `/proc`: resident memory and threads.

use crate::error::IoContext;
use crate::Result;

/// A field of `/proc/<pid>/status` as a number (the first word after the colon).
fn status_field(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| crate::Error::Environment(format!("no {field} in {path}")))
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_field(pid, "VmRSS")
}

/// Number of threads of process `pid`.
pub fn threads(pid: u32) -> Result<u64> {
    status_field(pid, "Threads")
}
