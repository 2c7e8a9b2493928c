//! `pg_status__log_format=json`: through start-up, a failover, a failed poll and shutdown, every line on
//! stdout and stderr is one JSON object with the newest upstream's keys, and transitions carry their host and
//! state as fields.

mod common;

use std::time::Duration;

use common::{for_nodes, start_ready, Checks, SLACK};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions};
use serde_json::Value;

#[test]
fn every_line_is_a_json_object_through_a_failover() {
    let Some(bins) = postgres_or_skip("every_line_is_a_json_object_through_a_failover") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster");
    let (m, r) = (cluster.node(0), cluster.node(1));
    let mut p = start_ready(for_nodes(&[m, r]).env("pg_status__log_format", "json"));
    common::settle(&p, "/master", &m.host());
    let has = |p: &pg_status_tests::PgStatus, host: &str, state: &str| {
        p.stdout()
            .texts()
            .iter()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["host"] == host && v["state"] == state))
    };
    m.stop().expect("stop the primary");
    r.promote().expect("promote the replica");
    p.wait_for_body("/master", &r.host(), Duration::from_secs(10) + SLACK).expect("the promoted replica is master");
    let waited = pg_status_tests::wait_until(Duration::from_secs(10), "a dead line for the old primary", || {
        has(&p, &m.host(), "dead").then_some(())
    });
    assert!(waited.is_ok(), "{waited:?}; {}", p.output_dump());
    p.terminate().expect("SIGTERM");
    p.wait_exit(Duration::from_secs(10)).expect("exit");

    let mut c = Checks::new();
    let mut objects = Vec::new();
    for (stream, lines) in [("stdout", p.stdout().texts()), ("stderr", p.stderr().texts())] {
        for line in lines {
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(map)) => {
                    // serde_json's map sorts its keys, so the order is read off the text.
                    let at = |key: &str| line.find(&format!("\"{key}\":")).unwrap_or(usize::MAX);
                    let order = [at("@timestamp"), at("levelStr"), at("component"), at("message")];
                    c.check(order[0] == 1 && order.windows(2).all(|w| w[0] < w[1]) && order[3] != usize::MAX, || {
                        format!(
                            "{stream}: @timestamp, levelStr, component and message come first, in that order: {line}"
                        )
                    });
                    let stamp = map["@timestamp"].as_str().unwrap_or("");
                    c.check(
                        stamp.len() == 24
                            && stamp.ends_with('Z')
                            && stamp.as_bytes()[10] == b'T'
                            && stamp.as_bytes()[19] == b'.',
                        || format!("{stream}: an RFC 3339 UTC timestamp with milliseconds: {stamp:?}"),
                    );
                    let level = map["levelStr"].as_str().unwrap_or("");
                    c.check(["DEBUG", "INFO", "WARNING", "ERROR"].contains(&level), || {
                        format!("{stream}: levelStr {level:?}")
                    });
                    objects.push((stream, Value::Object(map)));
                }
                _ => c.check(false, || format!("{stream}: not a JSON object: {line:?}")),
            }
        }
    }
    let find = |pred: &dyn Fn(&Value) -> bool| objects.iter().find(|(_, v)| pred(v)).cloned();
    let started =
        find(&|v| v["message"].as_str().is_some_and(|m| m.starts_with("pg-status ") && m.contains("listening on")));
    c.check(
        started.as_ref().is_some_and(|(s, v)| *s == "stdout" && v["levelStr"] == "INFO" && v["component"] == "main"),
        || format!("the start-up line: {started:?}"),
    );
    let promoted = find(&|v| v["host"] == r.host() && v["state"] == "master");
    c.check(
        promoted
            .as_ref()
            .is_some_and(|(_, v)| v["component"] == "monitor" && v["message"] == format!("{}: master", r.host())),
        || format!("the promoted replica's master line keeps the spec's message: {promoted:?}"),
    );
    let failed = find(&|v| v["host"] == m.host() && v["cause"].is_string() && v["error"].is_string());
    c.check(failed.as_ref().is_some_and(|(s, v)| *s == "stderr" && v["levelStr"] == "ERROR"), || {
        format!("a failed poll of the stopped primary on stderr, with its cause and error: {failed:?}")
    });
    let possible = find(&|v| v["host"] == m.host() && v["state"] == "possible_dead");
    c.check(possible.is_some(), || "a possible_dead line for the old primary".to_owned());
    let stopped = find(&|v| v["message"] == "pg-status stopped");
    c.check(stopped.is_some(), || "the shutdown line".to_owned());
    c.finish();
}

#[test]
fn a_configuration_error_is_a_json_line_too() {
    let mut p = common::builder()
        .env("pg_status__hosts", "db1")
        .env("pg_status__log_format", "json")
        .env("pg_status__sleep_ms", "soon")
        .spawn()
        .expect("spawn");
    let status = p.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(2));
    let lines = p.stderr().texts();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(v["levelStr"], "ERROR");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("pg_status__sleep_ms=\"soon\"")), "{v}");
}
