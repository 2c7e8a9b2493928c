//! Log lines: transitions and notices on stdout, errors on stderr, one flushed line at a time.
//!
//! Lines are written by a thread of their own through a bounded queue, so a stdout nobody reads (a full pipe)
//! never stops the poller or the HTTP server: when the queue is full, lines are dropped and counted, and the
//! count is reported once the output drains. Tests and operators read stdout line by line while the program
//! runs, so every line is flushed at once. Write errors (a closed pipe) are ignored: logging must never stop
//! the sidecar.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime};

use pg_status_core::config::{breaks_lines, LogFormat, LogLevel};
use pg_status_core::episode::EpisodeOutcome;
use pg_status_core::monitor::{Event, PollError, PollId};
use pg_status_core::observation::Observation;
use pg_status_core::severity::{Severity, Stream};

use crate::poller::driver::EventLog;

pub mod json;

/// Writes log lines to stdout and stderr, filtered by the configured level (`pg_status__log_level`):
///
/// - `debug`: everything below, and per-poll detail (host, iteration, duration, role and WAL positions or
///   the error) and replica routes answered with the master or nothing for lack of a matching replica;
/// - `info` (the default): the start-up and shutdown lines, host transitions, readiness and split brain on
///   stdout; failed polls, warnings and errors on stderr;
/// - `warning`: no info lines: split brain (stdout), failed polls, warnings and errors (stderr);
/// - `error`: failed polls and errors only;
/// - `fatal`: only what stops the program (a configuration it refuses, a port it cannot listen on).
///
/// In the `json` format (`pg_status__log_format`) every line is one JSON object instead: see [`json`].
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    level: LogLevel,
    format: LogFormat,
    /// The part of the program that logs (`main`, `monitor`, `http`), for JSON lines.
    component: &'static str,
}

impl Logger {
    /// A logger that prints what `level` asks for, in plain text, as the `main` component.
    pub fn new(level: LogLevel) -> Logger {
        Logger { level, format: LogFormat::Text, component: "main" }
    }

    /// The same logger writing in `format`.
    pub fn with_format(self, format: LogFormat) -> Logger {
        Logger { format, ..self }
    }

    /// The same logger, for the part of the program named `component`.
    pub fn component(self, component: &'static str) -> Logger {
        Logger { component, ..self }
    }

    /// Whether lines of `level` are printed.
    pub fn enabled(&self, level: LogLevel) -> bool {
        self.level <= level
    }

    /// An informational line on stdout: start-up, shutdown, host transitions.
    pub fn info(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Info, line);
    }

    /// Detail for debugging, on stdout.
    pub fn debug(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Debug, line);
    }

    /// A warning on stderr, prefixed with `warning: ` in plain text.
    pub fn warning(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Warning, line);
    }

    /// An error the program survives, on stderr, prefixed with `error: ` in plain text.
    pub fn error(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Error, line);
    }

    /// An error that stops the program, on stderr, prefixed with `error: ` in plain text; printed at every
    /// level.
    pub fn fatal(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Fatal, line);
    }

    /// A refused configuration or command line, on stderr at every level, without a prefix in plain text (the
    /// line names the variable first).
    pub fn refusal(&self, line: fmt::Arguments<'_>) {
        self.log(Severity::Refusal, line);
    }

    /// One line without fields, when the configured level shows `severity`.
    fn log(&self, severity: Severity, line: fmt::Arguments<'_>) {
        if self.enabled(severity.level()) {
            self.write(severity, line, &[]);
        }
    }

    /// One line as `severity` says: its prefix and the message in plain text, or a JSON object with the
    /// message and `fields`, on its stream.
    fn write(&self, severity: Severity, message: fmt::Arguments<'_>, fields: &[(&str, &str)]) {
        let stream = severity.stream();
        match self.format {
            LogFormat::Text => emit(stream, format_args!("{}{message}", severity.prefix())),
            LogFormat::Json => {
                let line =
                    json::line(SystemTime::now(), severity.level(), self.component, &message.to_string(), fields);
                emit(stream, format_args!("{line}"));
            }
        }
    }
}

impl EventLog for Logger {
    fn event(&mut self, event: &Event) {
        let severity = event.severity();
        if !self.enabled(severity.level()) {
            return;
        }
        let state;
        let error;
        let duration;
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(3);
        if let Some(host) = event.host() {
            fields.push(("host", host));
        }
        match event {
            Event::Transition { transition, .. } => {
                state = transition.as_str().replace(' ', "_");
                fields.push(("state", &state));
            }
            Event::PollFailed { error: e, .. } => {
                error = e.to_string();
                fields.push(("cause", e.kind.as_str()));
                fields.push(("error", &error));
            }
            Event::EpisodeStarted { cause, .. } => fields.push(("cause", cause.as_str())),
            Event::EpisodeEnded { outcome, lasted, .. } => {
                let ended = match outcome {
                    EpisodeOutcome::Master(_) => "master_confirmed",
                    EpisodeOutcome::WindowOver => "window_over",
                };
                fields.push(("outcome", ended));
                duration = lasted.as_millis().to_string();
                fields.push(("duration_ms", &duration));
            }
            Event::Ready | Event::SplitBrain { .. } | Event::SplitBrainEnded | Event::Warning { .. } => {}
        }
        self.write(severity, format_args!("{event}"), &fields);
    }

    fn poll_finished(&mut self, host: &str, id: PollId, elapsed: Duration, result: &Result<Observation, PollError>) {
        if !self.enabled(LogLevel::Debug) {
            return;
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        let fields = [("host", host)];
        match result {
            Ok(o) => self.write(
                Severity::Debug,
                format_args!(
                    "{host}: poll {} ok in {ms:.1} ms: {:?}, current {}, received {}, replayed {}, replay delay {} ms, timeline {}",
                    id.iteration,
                    o.role,
                    show(o.current_lsn),
                    show(o.receive_lsn),
                    show(o.replay_lsn),
                    show(o.replay_delay_ms),
                    show(o.timeline),
                ),
                &fields,
            ),
            Err(e) => self.write(
                Severity::Debug,
                format_args!("{host}: poll {} failed in {ms:.1} ms ({}): {e}", id.iteration, e.kind.as_str()),
                &fields,
            ),
        }
    }
}

/// A value or `null`.
fn show<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// Lines waiting for the writer thread at most. A reader that stalls (a full pipe nobody reads) costs at most
/// this many lines of memory; later lines are dropped and counted instead of blocking the poller.
const QUEUE_LINES: usize = 1024;

/// The writer thread's queue: every thread hands its lines over without ever waiting for the output.
struct Sink {
    lines: mpsc::SyncSender<(Stream, String)>,
    /// Lines queued and not yet written (for [`flush`]).
    pending: AtomicUsize,
    /// Lines dropped because the queue was full, since the last report.
    dropped: AtomicU64,
}

/// The writer thread, started with the first line; `None` when no thread could be started (lines are then
/// written by the caller, as before).
fn sink() -> Option<&'static Sink> {
    static SINK: OnceLock<Option<Sink>> = OnceLock::new();
    SINK.get_or_init(|| {
        let (lines, queue) = mpsc::sync_channel(QUEUE_LINES);
        let spawned = std::thread::Builder::new().name("pg-status-log".to_owned()).spawn(move || write_all(queue));
        spawned.ok().map(|_| Sink { lines, pending: AtomicUsize::new(0), dropped: AtomicU64::new(0) })
    })
    .as_ref()
}

/// The writer thread: writes every queued line, and after a stall says how many lines were dropped.
fn write_all(queue: mpsc::Receiver<(Stream, String)>) {
    while let Ok((stream, text)) = queue.recv() {
        write_now(stream, &text);
        let Some(sink) = sink() else { continue };
        // Report drops once the queue has drained, so the report follows the lines that made it.
        if sink.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let dropped = sink.dropped.swap(0, Ordering::AcqRel);
            if dropped > 0 {
                let warning = Severity::Warning;
                write_now(
                    warning.stream(),
                    &format!(
                        "{}{dropped} log lines were dropped because the output was not read fast enough",
                        warning.prefix()
                    ),
                );
            }
        }
    }
}

/// Hands a line to the writer thread, or drops and counts it when the queue is full. Characters that could
/// split or forge a line (controls, line separators: from server messages, requests or host names) are
/// escaped.
fn emit(stream: Stream, line: fmt::Arguments<'_>) {
    let text = escape(&line.to_string());
    match sink() {
        Some(sink) => {
            sink.pending.fetch_add(1, Ordering::AcqRel);
            if sink.lines.try_send((stream, text)).is_err() {
                sink.pending.fetch_sub(1, Ordering::AcqRel);
                sink.dropped.fetch_add(1, Ordering::AcqRel);
            }
        }
        None => write_now(stream, &text),
    }
}

/// `text` with every character that breaks a line escaped as in Rust string literals (`\n`, `\u{2028}`).
pub fn escape(text: &str) -> String {
    if !text.chars().any(breaks_lines) {
        return text.to_owned();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if breaks_lines(c) => escaped.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Writes one line now: stdout flushed at once (operators and tests read it while the program runs), stderr
/// unbuffered. Write errors (a closed pipe) are ignored: logging must never stop the sidecar.
fn write_now(stream: Stream, text: &str) {
    match stream {
        Stream::Out => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        }
        Stream::Err => {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

/// Waits, at most `timeout`, until every queued line is written: before the process exits.
pub fn flush(timeout: Duration) {
    let Some(sink) = sink() else { return };
    let until = std::time::Instant::now() + timeout;
    while sink.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaking_characters_are_escaped() {
        assert_eq!(escape("db1: master"), "db1: master");
        assert_eq!(escape("a\n127.0.6.9: master"), "a\\n127.0.6.9: master");
        assert_eq!(
            escape("x\u{2028}y\u{85}z\u{2029}\r\t\u{1b}[31m"),
            "x\\u{2028}y\\u{0085}z\\u{2029}\\r\\t\\u{001b}[31m"
        );
        assert_eq!(escape("caf\u{e9} \u{1F600}"), "caf\u{e9} \u{1F600}");
    }
}
