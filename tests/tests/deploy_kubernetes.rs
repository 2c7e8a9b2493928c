//! The Kubernetes example: the manifests pass a strict schema check against the bundled Kubernetes schemas with
//! no network, the pg-status container is set up as the README promises (probes on /live and /ready at the
//! port pg-status listens on, non-root, read-only root filesystem, the password from the Secret, requests
//! above the measured footprint), and the real binary with the container's environment serves a real cluster.

mod common;
mod tools;

use std::process::Command;

use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatusBuilder};
use tools::{output, repo, require, run_ok, said, PYPI_TOOLS};

const MANIFESTS: [&str; 2] = ["deploy/kubernetes/deployment.yaml", "deploy/kubernetes/secret.yaml"];

/// Measured peak resident memory of pg-status under HTTP load with 3 hosts (README, Performance), in MiB.
const MEASURED_PEAK_MIB: f64 = 5.7;

/// The most connections pg-status serves at once, and the measured memory of one that holds a partial request
/// (the costliest kind), in KiB.
const CONNECTION_CAP: f64 = 10_000.0;
const CONNECTION_KIB: f64 = 14.0;

/// The documents of a YAML file as JSON, read by PyYAML from kubernetes-validate's virtual environment.
fn documents(path: &str) -> Vec<serde_json::Value> {
    let python = format!("{PYPI_TOOLS}/venv/bin/python");
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let json = run_ok(Command::new(python).args(["-c", script]).arg(repo().join(path)));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path} as JSON: {e}"))
}

/// A Kubernetes memory quantity in MiB (`16Mi`, `1Gi`, `64M`, plain bytes).
fn mebibytes(q: &str) -> f64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(q.len()));
    let n: f64 = digits.parse().unwrap_or_else(|_| panic!("memory quantity {q:?}"));
    let bytes = match unit {
        "" => n,
        "Ki" => n * 1024.0,
        "Mi" => n * 1024.0 * 1024.0,
        "Gi" => n * 1024.0 * 1024.0 * 1024.0,
        "k" => n * 1e3,
        "M" => n * 1e6,
        "G" => n * 1e9,
        other => panic!("memory unit {other:?} in {q:?}"),
    };
    bytes / (1024.0 * 1024.0)
}

#[test]
fn manifests_pass_a_strict_schema_check_offline() {
    let Some(()) = require("manifests_pass_a_strict_schema_check_offline", &["kubernetes-validate"]) else { return };
    let mut cmd = Command::new("kubernetes-validate");
    cmd.current_dir(repo()).arg("--strict").args(MANIFESTS);
    // Without a network namespace of its own (as root, `unshare -n`) the check could fetch schemas; with one it
    // shows that it needs none.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root && tools::have("unshare") {
        let mut offline = Command::new("unshare");
        offline.current_dir(repo()).args(["-n", "kubernetes-validate", "--strict"]).args(MANIFESTS);
        output(&mut offline)
    } else {
        output(&mut cmd)
    };
    let text = said(&out);
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    for path in MANIFESTS {
        assert!(text.contains(&format!("{path} passed")), "{path} not validated:\n{text}");
    }
}

#[test]
fn sidecar_is_set_up_as_documented_and_its_environment_serves_a_cluster() {
    let test = "sidecar_is_set_up_as_documented_and_its_environment_serves_a_cluster";
    let Some(bins) = postgres_or_skip(test) else { return };
    let Some(()) = require(test, &[&format!("{PYPI_TOOLS}/venv/bin/python")]) else { return };
    let deployment = documents(MANIFESTS[0]).remove(0);
    let secret = documents(MANIFESTS[1]).remove(0);
    let mut c = common::Checks::new();

    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    c.eq("containers", containers.len(), 2);
    let sidecar = containers.iter().find(|k| k["name"] == "pg-status").expect("a pg-status container");
    let env: Vec<(String, serde_json::Value)> = sidecar["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_owned(), e.clone()))
        .collect();
    let value = |name: &str| env.iter().find(|(n, _)| n == name).and_then(|(_, e)| e["value"].as_str());

    // The probes reach pg-status where it listens: the named port is the container port and pg-status's.
    let port = sidecar["ports"][0]["containerPort"].as_u64();
    c.eq(
        "pg_status__http_port is the container port",
        value("pg_status__http_port"),
        port.map(|p| p.to_string()).as_deref(),
    );
    c.eq("listens on the pod's address", value("pg_status__http_host"), Some("0.0.0.0"));
    for (probe, path) in [("livenessProbe", "/live"), ("readinessProbe", "/ready")] {
        c.eq(&format!("{probe} path"), sidecar[probe]["httpGet"]["path"].as_str(), Some(path));
        c.eq(&format!("{probe} port"), &sidecar[probe]["httpGet"]["port"], &sidecar["ports"][0]["name"]);
    }
    let security = &sidecar["securityContext"];
    c.eq("runAsNonRoot", &security["runAsNonRoot"], &serde_json::json!(true));
    c.check(security["runAsUser"].as_u64().is_some_and(|u| u > 0), || format!("runAsUser {}", security["runAsUser"]));
    c.eq("readOnlyRootFilesystem", &security["readOnlyRootFilesystem"], &serde_json::json!(true));
    c.eq("allowPrivilegeEscalation", &security["allowPrivilegeEscalation"], &serde_json::json!(false));
    c.eq("capabilities dropped", &security["capabilities"]["drop"], &serde_json::json!(["ALL"]));

    let request = sidecar["resources"]["requests"]["memory"].as_str().map(mebibytes);
    let limit = sidecar["resources"]["limits"]["memory"].as_str().map(mebibytes);
    c.check(request.is_some_and(|r| r >= 2.0 * MEASURED_PEAK_MIB), || format!("memory request {request:?} MiB"));
    c.check(limit >= request, || format!("memory limit {limit:?} under the request {request:?}"));
    // The pod's address is reachable from the cluster: a flood of connections must not get the sidecar killed.
    let flood = MEASURED_PEAK_MIB + CONNECTION_CAP * CONNECTION_KIB / 1024.0;
    c.check(limit.is_some_and(|l| l >= flood), || format!("memory limit {limit:?} MiB under a full house {flood:.0}"));

    // The password comes from the Secret of secret.yaml, by a key it has.
    let password =
        env.iter().find(|(n, _)| n == "pg_status__pg_password").map(|(_, e)| &e["valueFrom"]["secretKeyRef"]);
    let password = password.expect("pg_status__pg_password is set");
    c.eq("password secret", &password["name"], &secret["metadata"]["name"]);
    let key = password["key"].as_str().unwrap_or("");
    c.check(secret["stringData"][key].is_string(), || format!("the Secret has no key {key:?}"));

    // The real binary accepts the container's environment (no unknown variable, no refused value) and serves
    // a cluster with it; only the hosts, the password and the address are this test's.
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let mut builder = PgStatusBuilder::new(&common::bin()).expect("builder");
    let own = ["pg_status__hosts", "pg_status__http_host", "pg_status__http_port", "pg_status__pg_user"];
    for (name, entry) in &env {
        if let (Some(v), false) = (entry["value"].as_str(), own.contains(&name.as_str())) {
            builder = builder.env(name, v);
        }
    }
    let p = common::start_ready(builder.hosts(&[(primary.host(), primary.port()), (replica.host(), replica.port())]));
    common::settle(&p, "/master", &primary.host());
    for path in ["/live", "/ready"] {
        c.eq(&format!("{path} status"), p.get(path).map(|r| r.status).ok(), Some(200));
    }
    c.check(!p.output_dump().contains("warning"), || {
        format!("warnings with the manifest's settings:\n{}", p.output_dump())
    });
    c.finish();
}
