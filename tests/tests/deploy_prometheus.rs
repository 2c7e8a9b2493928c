//! The alert rules and the dashboard: promtool checks the rules and runs their unit tests, every metric name
//! the rules and the dashboard use exists in a real pg-status's `/metrics`, and a real Prometheus server
//! scraping a real pg-status answers every dashboard query and fires the alerts when the master stops.

mod common;
mod tools;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pg_status_tests::net::free_port;
use pg_status_tests::{http, postgres_or_skip, wait_until_ok, Cluster, ClusterOptions, PgStatus};
use tools::{read, repo, require, run_ok};

const RULES: &str = "deploy/prometheus/pg-status.rules.yml";
const DASHBOARD: &str = "deploy/grafana/pg-status.json";

/// Every `pg_status_*` metric name in `text` (names with `__` are environment variables, not metrics).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pg_status_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        if !name.contains("__") {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every query of the dashboard: each panel target's `expr` and each template variable's query.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            queries.push((title, target["expr"].as_str().expect("expr").to_owned()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["query"]["query"].as_str() {
            queries.push((format!("variable {}", var["name"]), q.to_owned()));
        }
    }
    queries
}

/// The sample names of a scrape (`pg_status_poll_duration_seconds_bucket`, ...).
fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A pg-status watching a primary and a replica, ready, with a few HTTP answers counted.
fn watched_cluster(cluster: &Cluster) -> PgStatus {
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let p = common::start_ready(common::for_nodes(&[primary, replica]));
    common::settle(&p, "/master", &primary.host());
    common::settle(&p, "/replica", &replica.host());
    p.wait_for_host(&replica.host(), common::STARTUP, |h| h["lag_ms"].is_number()).expect("replica lag measured");
    p
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let Some(()) = require("rules_pass_promtool_check_and_their_unit_tests", &["promtool"]) else { return };
    let dir = repo().join("deploy/prometheus");
    let checked = run_ok(Command::new("promtool").current_dir(&dir).args(["check", "rules", "pg-status.rules.yml"]));
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run_ok(Command::new("promtool").current_dir(&dir).args(["test", "rules", "pg-status.rules.test.yml"]));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let Some(bins) = postgres_or_skip("every_metric_the_rules_and_the_dashboard_use_is_exported") else { return };
    let rules = metric_names(&read(RULES));
    let dashboard: BTreeSet<String> = dashboard_queries().iter().flat_map(|(_, q)| metric_names(q)).collect();
    assert!(rules.len() >= 8 && dashboard.len() >= 10, "too few names found: {rules:?} {dashboard:?}");

    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let p = watched_cluster(&cluster);
    let scrape = p.get("/metrics").expect("GET /metrics").text();
    let exported = exported_names(&scrape);
    let missing: Vec<String> = rules
        .iter()
        .map(|n| (RULES, n))
        .chain(dashboard.iter().map(|n| (DASHBOARD, n)))
        .filter(|(_, n)| !exported.contains(*n))
        .map(|(file, n)| format!("{file} uses {n}"))
        .collect();
    assert!(missing.is_empty(), "not in /metrics:\n{}\n--- /metrics ---\n{scrape}", missing.join("\n"));
}

/// A Prometheus server on loopback with its data in a temporary directory, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with `rules` loaded, and waits until it is ready.
    fn start(target: SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("write rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: pg-status\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST).expect("free port")));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus { child, addr, _dir: dir };
        wait_until_ok(Duration::from_secs(60), "Prometheus to be ready", || {
            http::get(addr, "/-/ready", None).and_then(|r| {
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(pg_status_tests::Error::Http(r.to_string()))
                }
            })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log()));
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path and return its `data`, panicking unless Prometheus answered `status: success`.
    fn api(&self, path: &str) -> serde_json::Value {
        let r = http::get(self.addr, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body: serde_json::Value = r.json().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(body["status"], "success", "GET {path}: {body}");
        body["data"].clone()
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The firing alerts, as (alert name, host label or "").
    fn firing(&self) -> BTreeSet<(String, String)> {
        let data = self.api("/api/v1/alerts");
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
                (label("alertname"), label("host"))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn live_prometheus_answers_the_dashboard_and_fires_when_the_master_stops() {
    let test = "live_prometheus_answers_the_dashboard_and_fires_when_the_master_stops";
    let Some(bins) = postgres_or_skip(test) else { return };
    let Some(()) = require(test, &["prometheus"]) else { return };
    let started = Instant::now();
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let p = watched_cluster(&cluster);

    // The rules as shipped, with every `for:` shortened so the test need not wait minutes; promtool's unit
    // tests cover the real durations.
    let rules: String = read(RULES)
        .lines()
        .map(|l| if l.trim_start().starts_with("for: ") { "        for: 1s".to_owned() } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    let prometheus = Prometheus::start(p.addr(), &rules);
    wait_until_ok(Duration::from_secs(60), "two scrapes of pg-status", || {
        let n = prometheus.query("count_over_time(pg_status_ready[1m])");
        match n.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()) {
            Some(v) if v >= 3.0 => Ok(()),
            other => Err(format!("{other:?} scrapes; targets: {}", prometheus.api("/api/v1/targets"))),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log()));

    // Every dashboard query is valid PromQL and has data (poll failures only once something fails).
    let mut c = common::Checks::new();
    let queries = dashboard_queries();
    let concrete = |q: &str| q.replace("$__rate_interval", "1m").replace("$instance", ".*");
    for (panel, q) in &queries {
        if q.starts_with("label_values(") {
            continue;
        }
        let result = prometheus.query(&concrete(q));
        c.check(!result.is_empty() || panel == "Poll failures", || format!("{panel}: no data for {q}"));
    }
    c.eq("alerts firing while the cluster is healthy", prometheus.firing(), BTreeSet::new());
    let states = prometheus
        .query(&concrete(&queries.iter().find(|(panel, _)| panel == "Host states").expect("a host states panel").1));
    let state_of = |host: &str| {
        states.iter().find(|s| s["metric"]["host"] == host).and_then(|s| s["value"][1].as_str().map(str::to_owned))
    };
    c.eq("state of the master (4: master)", state_of(&primary.host()), Some("4".to_owned()));
    c.eq("state of the replica (3: replica)", state_of(&replica.host()), Some("3".to_owned()));

    // The master stops: no master, the old master dead and failing its polls, and a failover nobody ends.
    primary.kill().expect("stop the master");
    let want: BTreeSet<(String, String)> = [
        ("PgStatusNoMaster".to_owned(), String::new()),
        ("PgStatusHostDead".to_owned(), primary.host()),
        ("PgStatusPollFailuresRising".to_owned(), primary.host()),
        // Nobody is promoted: the failover episode the stop started goes on past the (shortened) `for:`.
        ("PgStatusFailoverTooLong".to_owned(), String::new()),
    ]
    .into();
    let stopped = Instant::now();
    let fired = wait_until_ok(Duration::from_secs(90), "the alerts to fire", || {
        let firing = prometheus.firing();
        if want.is_subset(&firing) {
            Ok(firing)
        } else {
            Err(format!("firing: {firing:?}"))
        }
    });
    match fired {
        Ok(firing) => {
            eprintln!("alerts fired {:.1} s after the master stopped: {firing:?}", stopped.elapsed().as_secs_f64());
            c.check(!firing.iter().any(|(name, _)| name == "PgStatusSplitBrain"), || format!("{firing:?}"));
        }
        Err(e) => c.check(false, || format!("{e}\n{}", p.output_dump())),
    }
    let failures = prometheus.query(&concrete(
        &queries.iter().find(|(panel, _)| panel == "Poll failures").expect("a poll failures panel").1,
    ));
    c.check(failures.iter().any(|s| s["metric"]["host"] == primary.host().as_str()), || {
        format!("the poll failures panel shows no failure of the master: {failures:?}")
    });
    eprintln!("{test} took {:.1} s", started.elapsed().as_secs_f64());
    c.finish();
}
