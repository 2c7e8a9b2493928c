//! The report: Markdown printed as the run goes, kept for the summary and an optional output file.

use std::fmt::Write as _;
use std::time::Duration;

/// Lines printed so far, kept to be written to a file at the end.
#[derive(Debug, Default)]
pub struct Report {
    text: String,
}

impl Report {
    /// Prints a line and keeps it.
    pub fn line(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        println!("{line}");
        let _ = writeln!(self.text, "{line}");
    }

    /// Prints a Markdown table: a header row and rows of cells.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.line(format!("| {} |", header.join(" | ")));
        self.line(format!("|{}", "---|".repeat(header.len())));
        for row in rows {
            self.line(format!("| {} |", row.join(" | ")));
        }
        self.line("");
    }

    /// Everything printed so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A progress note on stderr, not part of the report.
pub fn progress(text: impl AsRef<str>) {
    eprintln!("[bench] {}", text.as_ref());
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A KiB count as MiB with two decimals.
pub fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// Requests per second, rounded, with thousands separators.
pub fn rate(rps: f64) -> String {
    let n = rps.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "met" or "MISSED".
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The median of a non-empty list (the lower middle for an even count); `None` for an empty one.
pub fn median_by<T: Clone>(items: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut sorted: Vec<T> = items.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len().saturating_sub(1) / 2).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(mib(2048), "2.00 MiB");
        assert_eq!(median_by(&[3.0, 1.0, 2.0], |x| *x), Some(2.0));
        assert_eq!(median_by(&[4.0, 1.0], |x| *x), Some(1.0));
        assert_eq!(median_by::<f64>(&[], |x| *x), None);
    }
}
