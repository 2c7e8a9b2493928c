//! JSON log lines (`pg_status__log_format=json`): one object per line with the newest upstream's keys,
//! `@timestamp` (RFC 3339, UTC, milliseconds), `levelStr`, `component` and `message`, followed by structured
//! fields such as `host`, `state` and `error`.
//!
//! The encoder is written out here rather than taken from a JSON crate: a line is a flat object of strings,
//! and the string escaping is the core's own (the one `/hosts` uses), which also covers U+2028 and U+2029.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use pg_status_core::config::LogLevel;
use pg_status_core::render::push_json_str;

/// One log line as a JSON object (without the newline).
pub fn line(at: SystemTime, level: LogLevel, component: &str, message: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(96 + message.len());
    out.push_str("{\"@timestamp\":\"");
    timestamp(&mut out, at);
    out.push_str("\",\"levelStr\":\"");
    out.push_str(level.as_upper());
    out.push_str("\",\"component\":");
    push_json_str(&mut out, component);
    out.push_str(",\"message\":");
    push_json_str(&mut out, message);
    for (key, value) in fields {
        out.push(',');
        push_json_str(&mut out, key);
        out.push(':');
        push_json_str(&mut out, value);
    }
    out.push('}');
    out
}

/// Appends `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Times before 1970 are written as the epoch.
fn timestamp(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_milliseconds() {
        let render = |t| {
            let mut s = String::new();
            timestamp(&mut s, t);
            s
        };
        assert_eq!(render(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(render(at(951_782_400, 7)), "2000-02-29T00:00:00.007Z");
        assert_eq!(render(at(1_787_315_701, 245)), "2026-08-21T12:35:01.245Z");
        assert_eq!(render(at(4_102_444_799, 999)), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_line_has_the_keys_in_order_and_escapes_what_could_break_it() {
        let line = line(
            at(1_787_315_701, 245),
            LogLevel::Warning,
            "monitor",
            "db1: possible dead",
            &[("host", "db1\n\"x\"\u{2028}"), ("state", "possible_dead")],
        );
        assert_eq!(
            line,
            r#"{"@timestamp":"2026-08-21T12:35:01.245Z","levelStr":"WARNING","component":"monitor","message":"db1: possible dead","host":"db1\n\"x\"\u2028","state":"possible_dead"}"#
        );
        assert!(!line.contains('\n'));
    }
}
