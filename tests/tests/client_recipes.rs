//! The README's Python examples, taken from README.md (the blocks after `<!-- run by
//! tests/tests/client_recipes.rs -->`) and run with psycopg and requests (pinned, from PyPI) against a real
//! cluster, so an example that stops working breaks the build: read-your-writes finds its row even while
//! every replica's replay is paused, and the replica-only read walks past a stopped replica and gives up
//! when none is left.

mod common;
mod tools;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{for_nodes, start_ready, Checks, STARTUP};
use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatus};

const MARKER: &str = "<!-- run by tests/tests/client_recipes.rs -->\n```python\n";

/// The README's marked Python blocks, in order.
fn recipes() -> Vec<String> {
    let readme = tools::read("README.md");
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find(MARKER) {
        let code = &rest[at + MARKER.len()..];
        let end = code.find("```").expect("a marked Python block ends");
        out.push(code[..end].to_owned());
        rest = &code[end..];
    }
    out
}

fn python() -> String {
    format!("{}/venv/bin/python", tools::PYPI_TOOLS)
}

/// Runs `code` with pg-status at `p`'s address and libpq's credentials for the test cluster.
fn run(p: &PgStatus, code: &str) -> Output {
    let code = code.replace("http://127.0.0.1:8000", &format!("http://{}", p.addr()));
    assert!(code.contains(&p.addr().to_string()), "the example names pg-status's address:\n{code}");
    tools::output(
        Command::new(python())
            .arg("-c")
            .arg(&code)
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", "postgres")
            .env("PGDATABASE", "postgres")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[test]
fn the_readme_python_examples_work_against_a_real_cluster() {
    let test = "the_readme_python_examples_work_against_a_real_cluster";
    let Some(bins) = postgres_or_skip(test) else { return };
    let Some(()) = tools::require(test, &[&python()]) else { return };
    let recipes = recipes();
    assert_eq!(recipes.len(), 2, "the README's marked Python examples");
    let (read_your_writes, replicas_only) = (&recipes[0], &recipes[1]);
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(2)).expect("cluster");
    let (m, r1, r2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let p = start_ready(for_nodes(&[m, r1, r2]));
    common::settle(&p, "/master", &m.host());
    let mut c = Checks::new();

    // The replicas have the table, then their replay is paused: a read sent to one cannot see the new row, so
    // only an LSN that covers the commit keeps the read on the master.
    m.execute("CREATE TABLE orders (id integer)").expect("table");
    cluster.wait_caught_up(Duration::from_secs(30)).expect("replicas have the table");
    r1.pause_replay().expect("pause r1");
    r2.pause_replay().expect("pause r2");
    let out = run(&p, read_your_writes);
    let want = (Some(0), format!("{} (42,)", m.host()));
    c.eq("read-your-writes with replay paused", (out.status.code(), stdout(&out)), want);
    c.check(out.status.success(), || tools::said(&out));
    m.execute("DELETE FROM orders").expect("delete the rows");

    // Replicas streaming again: the example still reads its row, now from whichever server qualifies.
    r1.resume_replay().expect("resume r1");
    r2.resume_replay().expect("resume r2");
    cluster.wait_caught_up(Duration::from_secs(30)).expect("replicas catch up");
    let out = run(&p, read_your_writes);
    let said = stdout(&out);
    let hosts = [m.host(), r1.host(), r2.host()];
    c.check(out.status.success() && said.ends_with(" (42,)"), || format!("read-your-writes: {}", tools::said(&out)));
    c.check(hosts.iter().any(|h| said.starts_with(&format!("{h} "))), || format!("answered by a node: {said}"));
    eprintln!("read-your-writes with replicas streaming was answered by {said}");

    // Replica-only reads: a replica answers; with r1 stopped (listed until its poll fails, or not) the example
    // moves on to r2; with no replica left it gives up instead of reading from the master.
    let out = run(&p, replicas_only);
    let said = stdout(&out);
    c.check(out.status.success() && [r1.host(), r2.host()].iter().any(|h| said == format!("{h} (True,)")), || {
        format!("replica-only read: {}", tools::said(&out))
    });
    r1.stop().expect("stop r1");
    let out = run(&p, replicas_only);
    c.eq(
        "replica-only read with r1 stopped",
        (out.status.code(), stdout(&out)),
        (Some(0), format!("{} (True,)", r2.host())),
    );
    r2.stop().expect("stop r2");
    for r in [&r1, &r2] {
        p.wait_for_host(&r.host(), STARTUP, |e| e["alive"] == false).expect("replica dead");
    }
    let out = run(&p, replicas_only);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    c.eq("replica-only read without replicas: exit status", out.status.code(), Some(1));
    c.check(err.contains("no replica within 500 ms") && stdout(&out).is_empty(), || tools::said(&out));
    c.finish();
}
