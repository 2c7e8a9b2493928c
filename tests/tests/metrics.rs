//! `/metrics` of the real binary against a real cluster: the Prometheus text format (checked by
//! `promtool check metrics`), the per-host values, and the HTTP answers counted by route and status.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pg_status_tests::{is_ci, postgres_or_skip, Cluster, ClusterOptions, PgStatus};

/// The value of the sample `name_and_labels` (the text before the value, exactly), if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok()).flatten()
    })
}

/// Runs `promtool check metrics` on `text` (parse and naming lint) and returns whether it accepts it, with
/// what it said; `None` when promtool is missing outside CI.
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if is_ci() => panic!("promtool is required under CI (scripts/install-tools.sh installs it): {e}"),
        Err(e) => {
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! NOT VALIDATING /metrics with promtool: {e} (apt-get install prometheus)");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), said))
}

fn scrape(p: &PgStatus) -> String {
    let r = p.get("/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{r}\n{}", p.output_dump());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"), "{r}");
    r.text()
}

#[test]
fn metrics_pass_promtool_and_describe_the_cluster() {
    let Some(bins) = postgres_or_skip("metrics_pass_promtool_and_describe_the_cluster") else { return };
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let p = common::start_ready(common::for_nodes(&[primary, replica]));
    common::settle(&p, "/master", &primary.host());
    common::settle(&p, "/replica", &replica.host());

    // The poll statistics in /metrics are published at most every 100 ms: wait until they include the
    // polls that made both hosts known.
    let polled = |host: String| format!("pg_status_poll_duration_seconds_count{{host=\"{host}\"}}");
    let (m_polls, r_polls) = (polled(primary.host()), polled(replica.host()));
    pg_status_tests::wait_until(Duration::from_secs(2), "poll counts in /metrics", || {
        let text = scrape(&p);
        (sample(&text, &m_polls).is_some_and(|v| v >= 1.0) && sample(&text, &r_polls).is_some_and(|v| v >= 1.0))
            .then_some(())
    })
    .expect("poll counts published");

    // Answers of several routes and statuses to count.
    assert_eq!(p.get("/master").expect("GET").status, 200);
    assert_eq!(p.get("/replica?lag_ms=x").expect("GET").status, 400);
    assert_eq!(p.get("/no-such-route").expect("GET").status, 404);
    assert_eq!(p.get("/live").expect("GET").status, 200);

    let text = scrape(&p);
    if let Some((ok, said)) = promtool(&text) {
        assert!(ok, "promtool check metrics failed:\n{said}\n--- metrics ---\n{text}");
    }

    let (m, r) = (primary.host(), replica.host());
    let expect = [
        ("pg_status_ready".to_owned(), 1.0),
        ("pg_status_masters".to_owned(), 1.0),
        ("pg_status_split_brain".to_owned(), 0.0),
        (format!("pg_status_host_up{{host=\"{m}\"}}"), 1.0),
        (format!("pg_status_host_up{{host=\"{r}\"}}"), 1.0),
        (format!("pg_status_host_master{{host=\"{m}\"}}"), 1.0),
        (format!("pg_status_host_master{{host=\"{r}\"}}"), 0.0),
        (format!("pg_status_host_elected_master{{host=\"{m}\"}}"), 1.0),
        (format!("pg_status_host_possibly_dead{{host=\"{r}\"}}"), 0.0),
        (format!("pg_status_host_dead{{host=\"{r}\"}}"), 0.0),
        (format!("pg_status_host_consecutive_failures{{host=\"{m}\"}}"), 0.0),
        (format!("pg_status_poll_failures_total{{host=\"{m}\",cause=\"connect\"}}"), 0.0),
        ("pg_status_http_requests_total{route=\"/replica\",status=\"400\"}".to_owned(), 1.0),
        ("pg_status_http_requests_total{route=\"other\",status=\"404\"}".to_owned(), 1.0),
        ("pg_status_http_requests_total{route=\"/live\",status=\"200\"}".to_owned(), 1.0),
    ];
    let mut wrong = Vec::new();
    for (key, value) in &expect {
        if sample(&text, key) != Some(*value) {
            wrong.push(format!("{key}: expected {value}, got {:?}", sample(&text, key)));
        }
    }
    let at_least = [
        ("pg_status_http_requests_total{route=\"/master\",status=\"200\"}".to_owned(), 2.0),
        ("pg_status_http_requests_total{route=\"/ready\",status=\"200\"}".to_owned(), 1.0),
        (format!("pg_status_poll_duration_seconds_count{{host=\"{m}\"}}"), 1.0),
        (format!("pg_status_host_connections_opened_total{{host=\"{r}\"}}"), 1.0),
    ];
    for (key, min) in &at_least {
        if !sample(&text, key).is_some_and(|v| v >= *min) {
            wrong.push(format!("{key}: expected at least {min}, got {:?}", sample(&text, key)));
        }
    }
    for key in
        [format!("pg_status_host_lag_seconds{{host=\"{r}\"}}"), format!("pg_status_host_lag_bytes{{host=\"{r}\"}}")]
    {
        if sample(&text, &key).is_none() {
            wrong.push(format!("{key}: missing"));
        }
    }
    assert!(wrong.is_empty(), "{}\n--- metrics ---\n{text}", wrong.join("\n"));

    // The scrape itself is counted (a scrape shows the ones before it), and so is a refused method.
    let scrapes = "pg_status_http_requests_total{route=\"/metrics\",status=\"200\"}";
    let before = sample(&text, scrapes).unwrap_or(0.0);
    let again = scrape(&p);
    assert_eq!(sample(&again, scrapes), Some(before + 1.0), "{again}");
    let post = pg_status_tests::http::request(p.addr(), "POST", "/metrics", &[], Duration::from_secs(5))
        .expect("POST /metrics");
    assert_eq!(post.status, 405, "{post}");
    assert_eq!(post.header("allow"), Some("GET, HEAD"), "{post}");

    // A host that stops answering shows up as down, with its failures counted by cause.
    replica.kill().expect("kill the replica");
    p.wait_for_host(&r, common::STARTUP, |h| h["alive"] == false).expect("replica dead");
    // The failure counters follow the host's state within the telemetry's 100 ms.
    let failed = format!("pg_status_host_consecutive_failures{{host=\"{r}\"}}");
    let text = pg_status_tests::wait_until(Duration::from_secs(2), "failures in /metrics", || {
        let text = scrape(&p);
        sample(&text, &failed).is_some_and(|v| v >= 3.0).then_some(text)
    })
    .expect("the replica's failures published");
    assert_eq!(sample(&text, &format!("pg_status_host_up{{host=\"{r}\"}}")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &format!("pg_status_host_dead{{host=\"{r}\"}}")), Some(1.0), "{text}");
    assert!(
        sample(&text, &format!("pg_status_host_consecutive_failures{{host=\"{r}\"}}")).is_some_and(|v| v >= 3.0),
        "{text}"
    );
    let failures: f64 = ["connect", "closed", "timeout", "query", "auth", "bad_reply"]
        .iter()
        .filter_map(|cause| sample(&text, &format!("pg_status_poll_failures_total{{host=\"{r}\",cause=\"{cause}\"}}")))
        .sum();
    assert!(failures >= 3.0, "failures by cause add up to {failures}\n{text}");
    if let Some((ok, said)) = promtool(&text) {
        assert!(ok, "promtool check metrics failed after the failure:\n{said}\n--- metrics ---\n{text}");
    }
}
