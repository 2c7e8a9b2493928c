//! JSON documents of host answers: `/hosts`, `/status`, and the string escaping every JSON text shares
//! (the log lines' too).

use std::fmt::Write as _;

use crate::observation::Role;
use crate::snapshot::{Health, HostStatus, Snapshot};

impl Snapshot {
    /// The `/hosts` JSON document. It depends on the snapshot alone, so a caller that answers many
    /// requests from one snapshot may render it once and keep it (see [`crate::Prepared::Hosts`]).
    pub fn hosts_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.hosts.len() * 200);
        out.push('[');
        for (i, h) in self.hosts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_host_json(&mut out, h, true);
        }
        out.push(']');
        out
    }

    /// The `/status` JSON document of one host.
    pub fn status_json(&self, host: &HostStatus) -> String {
        let mut out = String::with_capacity(256);
        write_host_json(&mut out, host, false);
        out
    }
}

/// Appends `s` as a JSON string literal, escaping quotes, backslashes, control characters and the line
/// separators U+2028 and U+2029 (valid JSON, but line breaks to log pipelines and JavaScript).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if crate::config::breaks_lines(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn push_opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

pub(crate) fn push_opt_u64(out: &mut String, v: Option<u64>) {
    match v {
        // Writing to a String cannot fail.
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// Writes one host as `/hosts` (with its name) or `/status` (without) shows it, in the spec's field order.
fn write_host_json(out: &mut String, h: &HostStatus, with_name: bool) {
    out.push('{');
    if with_name {
        out.push_str("\"host\": ");
        push_json_str(out, &h.id.name);
        out.push_str(", ");
    }
    out.push_str("\"dc\": ");
    push_opt_str(out, h.id.dc.as_deref());
    out.push_str(", \"geo\": ");
    push_opt_str(out, h.id.geo.as_deref());
    // Writing to a String cannot fail.
    let _ = write!(out, ", \"port\": {}", h.id.port);
    out.push_str(", \"master\": ");
    out.push_str(if h.role == Some(Role::Master) { "true" } else { "false" });
    out.push_str(", \"alive\": ");
    out.push_str(if h.alive() { "true" } else { "false" });
    out.push_str(", \"possible_dead\": ");
    out.push_str(if h.health == Health::PossiblyDead { "true" } else { "false" });
    out.push_str(", \"lag_ms\": ");
    push_opt_u64(out, h.lag_ms);
    out.push_str(", \"sync_by_time\": ");
    out.push_str(if h.sync_by_time { "true" } else { "false" });
    out.push_str(", \"lag_bytes\": ");
    push_opt_u64(out, h.lag_bytes);
    out.push_str(", \"sync_by_bytes\": ");
    out.push_str(if h.sync_by_bytes { "true" } else { "false" });
    out.push_str(", \"lsn\": ");
    match h.lsn {
        Some(lsn) => {
            // Writing to a String cannot fail.
            let _ = write!(out, "\"{lsn}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(", \"timeline\": ");
    push_opt_u64(out, h.timeline.map(u64::from));
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\n\u{1}é");
    }
}
