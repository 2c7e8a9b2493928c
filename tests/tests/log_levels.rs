//! `pg_status__log_level` against the real binary and a real primary, with a second host that refuses
//! connections and an unknown `pg_status__*` variable (a start-up warning): what each level prints where.

mod common;

use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus};

/// The closed port of the host that never answers.
const DOWN: &str = "127.0.0.1";

/// What one run printed.
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Output {
    fn has(lines: &[String], pred: impl Fn(&str) -> bool) -> bool {
        lines.iter().any(|l| pred(l))
    }
}

/// Runs pg-status at `level` until the down host is dead and the primary answered `/master`, asks
/// `/replica` (no replica: the master answers), then stops it with SIGTERM and returns all it printed.
fn run_at(cluster: &Cluster, level: &str) -> Output {
    let primary = cluster.primary();
    let builder = common::builder()
        .hosts(&[(primary.host(), primary.port()), (DOWN.to_owned(), 1)])
        .env("pg_status__log_level", level)
        .env("pg_status__no_such_setting", "1");
    let mut p: PgStatus = common::start_ready(builder);
    common::settle(&p, "/master", &primary.host());
    p.wait_for_host(DOWN, common::STARTUP, |h| h["alive"] == false).expect("the down host is dead");
    assert_eq!(common::plain_200(&p, "/replica"), primary.host());
    // No pause for the lines: every line logged before SIGTERM (the dead host's failures, the fallback of
    // `/replica`) is written before the program exits, and `wait_exit` reads both streams to their end.
    p.terminate().expect("SIGTERM");
    let status = p.wait_exit(common::STARTUP).expect("exits");
    assert!(status.success(), "{status}\n{}", p.output_dump());
    Output { stdout: p.stdout().texts(), stderr: p.stderr().texts() }
}

#[test]
fn log_levels_filter_what_is_printed() {
    let Some(bins) = postgres_or_skip("log_levels_filter_what_is_printed") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(0)).expect("cluster starts");
    let m = cluster.primary().host();
    let startup = |l: &str| l.starts_with("pg-status ") && l.contains(" listening on http://");
    let stopped = |l: &str| l == "pg-status stopped";
    let master_line = format!("{m}: master");
    let transition =
        |l: &str| l == master_line || l == format!("{DOWN}: dead") || l == format!("{DOWN}: possible dead");
    let warning = |l: &str| l.starts_with("warning: pg_status__no_such_setting");
    let poll_failed = |l: &str| l.starts_with(&format!("{DOWN}: poll failed (connect)"));
    let per_poll = |l: &str| l.starts_with(&format!("{m}: poll ")) && l.contains(" ok in ");
    let fallback = |l: &str| l.contains("no replica matches; answered the master");

    let mut failures = Vec::new();
    let mut expect = |level: &str, what: &str, lines: &[String], pred: &dyn Fn(&str) -> bool, want: bool| {
        if Output::has(lines, pred) != want {
            failures.push(format!("{level}: {what} expected {}: {lines:?}", if want { "present" } else { "absent" }));
        }
    };

    let info = run_at(&cluster, "info");
    expect("info", "start-up line", &info.stdout, &startup, true);
    expect("info", "shutdown line", &info.stdout, &stopped, true);
    expect("info", "transitions", &info.stdout, &transition, true);
    expect("info", "per-poll detail", &info.stdout, &per_poll, false);
    expect("info", "fallback detail", &info.stdout, &fallback, false);
    expect("info", "warning", &info.stderr, &warning, true);
    expect("info", "poll failure", &info.stderr, &poll_failed, true);

    let debug = run_at(&cluster, "debug");
    expect("debug", "start-up line", &debug.stdout, &startup, true);
    expect("debug", "transitions", &debug.stdout, &transition, true);
    expect("debug", "per-poll detail", &debug.stdout, &per_poll, true);
    expect("debug", "fallback detail", &debug.stdout, &fallback, true);
    expect("debug", "poll failure", &debug.stderr, &poll_failed, true);

    for level in ["warning", "warn"] {
        let out = run_at(&cluster, level);
        expect(level, "anything on stdout", &out.stdout, &|_| true, false);
        expect(level, "warning", &out.stderr, &warning, true);
        expect(level, "poll failure", &out.stderr, &poll_failed, true);
    }

    let error = run_at(&cluster, "error");
    expect("error", "anything on stdout", &error.stdout, &|_| true, false);
    expect("error", "warning", &error.stderr, &warning, false);
    expect("error", "poll failure", &error.stderr, &poll_failed, true);

    let fatal = run_at(&cluster, "fatal");
    expect("fatal", "anything on stdout", &fatal.stdout, &|_| true, false);
    expect("fatal", "anything on stderr", &fatal.stderr, &|_| true, false);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fatal_still_reports_what_stops_the_program() {
    let mut p = common::builder()
        .env("pg_status__hosts", "db1")
        .env("pg_status__log_level", "fatal")
        .env("pg_status__max_fails", "zero")
        .spawn()
        .expect("spawn");
    let status = p.wait_exit(common::STARTUP).expect("exits");
    assert_eq!(status.code(), Some(2), "{}", p.output_dump());
    let stderr = p.stderr().texts();
    assert!(stderr.len() == 1 && stderr[0].starts_with("pg_status__max_fails="), "{stderr:?}");
}
