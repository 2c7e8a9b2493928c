//! TLS to PostgreSQL (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLCRL`) against a real
//! server switched to `ssl = on` with certificates each test makes with openssl.

mod common;

use std::time::Duration;

use pg_status_tests::tls::{self, KeyPair, TlsFiles, CLIENT_CERT_USER, TLS_ONLY_USER, TLS_USER_PASSWORD};
use pg_status_tests::{
    is_ci, postgres_or_skip, wait_until_ok, Cluster, ClusterOptions, PgStatus, PgStatusBuilder, Proxy,
};

/// How long a connection failure may take to show on stderr.
const FAILURE: Duration = Duration::from_secs(20);

/// A primary with TLS on, its certificate naming its own address, and the files that made it.
struct TlsCluster {
    cluster: Cluster,
    files: TlsFiles,
    server: KeyPair,
}

impl TlsCluster {
    fn host(&self) -> String {
        self.cluster.primary().host()
    }

    /// A pg-status builder for the primary.
    fn builder(&self) -> PgStatusBuilder {
        common::for_nodes(&[self.cluster.primary()])
    }

    /// How many of pg-status's sessions on the primary use TLS, and how many do not.
    fn pg_status_sessions(&self) -> (u32, u32) {
        let rows = self
            .cluster
            .primary()
            .query(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'pg-status'",
            )
            .expect("pg_stat_ssl");
        let value = |i: usize| rows[0][i].as_deref().unwrap_or("0").parse().expect("a count");
        (value(0), value(1))
    }
}

fn tls_cluster(test: &str) -> Option<TlsCluster> {
    let bins = postgres_or_skip(test)?;
    if !tls::openssl_available() {
        assert!(!is_ci(), "{test}: the openssl command is required under CI");
        eprintln!("!!! SKIPPING {test}: the openssl command is missing (apt-get install openssl)");
        return None;
    }
    let files = TlsFiles::new(&bins).expect("TLS files");
    let options = ClusterOptions { extra_conf: files.cluster_conf(), ..ClusterOptions::with_replicas(0) };
    let cluster = Cluster::start(&bins, options).expect("cluster starts");
    let primary = cluster.primary();
    let server = files.server_cert(&files.ca(), "server", primary.ip()).expect("server certificate");
    files.enable_ssl(primary, &server, &files.ca()).expect("ssl on");
    files.create_users(primary).expect("TLS users");
    Some(TlsCluster { cluster, files, server })
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Waits until `/master` names `host`.
fn connects(p: &PgStatus, host: &str) {
    common::settle(p, "/master", host);
}

/// Waits for a poll failure mentioning `needle` and checks that the host is not master.
fn fails_with(p: &PgStatus, needle: &str) -> String {
    let line = p
        .stderr()
        .wait_for(0, needle, FAILURE, |l| l.contains("poll failed") && l.contains(needle))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.output_dump()))
        .1
        .text;
    p.wait_ready(common::STARTUP).expect("ready after the first poll");
    let master = p.get("/master").expect("GET /master");
    assert_eq!(master.status, 404, "no master while TLS fails: {master}\n{}", p.output_dump());
    line
}

#[test]
fn tls_require_connects_over_tls() {
    let Some(t) = tls_cluster("tls_require_connects_over_tls") else { return };
    let p = t.builder().env("PGSSLMODE", "require").spawn().expect("spawn");
    connects(&p, &t.host());
    let (tls, plain) = t.pg_status_sessions();
    assert!(tls >= 1 && plain == 0, "pg-status sessions: {tls} over TLS, {plain} plain");
}

#[test]
fn tls_prefer_is_the_default_and_disable_stays_plain() {
    let Some(t) = tls_cluster("tls_prefer_is_the_default_and_disable_stays_plain") else { return };
    let p = t.builder().spawn().expect("spawn");
    connects(&p, &t.host());
    let (tls, plain) = t.pg_status_sessions();
    assert!(tls >= 1 && plain == 0, "default (prefer): {tls} over TLS, {plain} plain");
    drop(p);

    let p = t.builder().env("PGSSLMODE", "disable").spawn().expect("spawn");
    connects(&p, &t.host());
    wait_until_ok(Duration::from_secs(10), "the TLS session of the first pg-status to end", || {
        match t.pg_status_sessions() {
            (0, plain) if plain >= 1 => Ok(()),
            other => Err(format!("(TLS, plain) = {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.output_dump()));
}

#[test]
fn tls_verify_full_accepts_the_right_name_and_rejects_a_wrong_one() {
    let Some(t) = tls_cluster("tls_verify_full_accepts_the_right_name_and_rejects_a_wrong_one") else { return };
    let ca = path(&t.files.ca().cert);
    let p = t.builder().env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", &ca).spawn().expect("spawn");
    connects(&p, &t.host());
    drop(p);

    // The same server reached through another loopback address, which its certificate does not name.
    let proxy = Proxy::start(t.cluster.primary().addr()).expect("proxy");
    let through_proxy = || common::for_proxies(&[&proxy]).env("PGSSLROOTCERT", &ca);
    let p = through_proxy().env("PGSSLMODE", "verify-full").spawn().expect("spawn");
    let line = fails_with(&p, "invalid peer certificate");
    assert!(line.contains(&proxy.host()), "the error names the host it expected: {line}");
    drop(p);

    // verify-ca checks the chain only: the same connection is fine.
    let p = through_proxy().env("PGSSLMODE", "verify-ca").spawn().expect("spawn");
    connects(&p, &proxy.host());
}

#[test]
fn tls_verify_ca_rejects_a_server_of_another_authority() {
    let Some(t) = tls_cluster("tls_verify_ca_rejects_a_server_of_another_authority") else { return };
    let other = t.files.make_ca("other").expect("another CA");
    for mode in ["verify-ca", "verify-full", "require"] {
        let p = t.builder().env("PGSSLMODE", mode).env("PGSSLROOTCERT", path(&other.cert)).spawn().expect("spawn");
        fails_with(&p, "invalid peer certificate");
    }
    // Without a root file, require does not check the certificate at all.
    let p = t.builder().env("PGSSLMODE", "require").spawn().expect("spawn");
    connects(&p, &t.host());
}

#[test]
fn tls_prefer_falls_back_to_plain_after_a_failed_handshake() {
    let Some(t) = tls_cluster("tls_prefer_falls_back_to_plain_after_a_failed_handshake") else { return };
    let other = t.files.make_ca("other").expect("another CA");
    // With a root file, prefer checks the chain (as libpq does); it fails, so a plain session follows.
    let p = t.builder().env("PGSSLMODE", "prefer").env("PGSSLROOTCERT", path(&other.cert)).spawn().expect("spawn");
    connects(&p, &t.host());
    let (tls, plain) = t.pg_status_sessions();
    assert!(tls == 0 && plain >= 1, "prefer after a failed handshake: {tls} over TLS, {plain} plain");
    drop(p);

    // A user the server accepts only over TLS: both attempts fail, and the error tells both stories.
    let p = t
        .builder()
        .env("pg_status__pg_user", TLS_ONLY_USER)
        .env("pg_status__pg_password", TLS_USER_PASSWORD)
        .env("PGSSLMODE", "prefer")
        .env("PGSSLROOTCERT", path(&other.cert))
        .spawn()
        .expect("spawn");
    let line = fails_with(&p, "pg_hba.conf");
    assert!(line.contains("with TLS: ") && line.contains("invalid peer certificate"), "{line}");
}

#[test]
fn tls_client_certificate_for_clientcert_verify_full() {
    let Some(t) = tls_cluster("tls_client_certificate_for_clientcert_verify_full") else { return };
    let client = t.files.client_cert(&t.files.ca(), "client", CLIENT_CERT_USER).expect("client certificate");
    let as_client = || {
        t.builder()
            .env("pg_status__pg_user", CLIENT_CERT_USER)
            .env("pg_status__pg_password", TLS_USER_PASSWORD)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", path(&t.files.ca().cert))
    };
    let p = as_client().env("PGSSLCERT", path(&client.cert)).env("PGSSLKEY", path(&client.key)).spawn().expect("spawn");
    connects(&p, &t.host());
    drop(p);

    // No client certificate: the server refuses the session.
    let p = as_client().spawn().expect("spawn");
    fails_with(&p, "requires a valid client certificate");
    drop(p);

    // A certificate for another user name: refused as well (the server reports a failed authentication).
    let wrong = t.files.client_cert(&t.files.ca(), "wrong-user", "somebody_else").expect("client certificate");
    let p = as_client().env("PGSSLCERT", path(&wrong.cert)).env("PGSSLKEY", path(&wrong.key)).spawn().expect("spawn");
    fails_with(&p, "authentication failed");
}

#[test]
fn tls_allow_falls_back_to_tls_when_plain_is_refused() {
    let Some(t) = tls_cluster("tls_allow_falls_back_to_tls_when_plain_is_refused") else { return };
    let tls_only = |mode: &str| {
        t.builder()
            .env("pg_status__pg_user", TLS_ONLY_USER)
            .env("pg_status__pg_password", TLS_USER_PASSWORD)
            .env("PGSSLMODE", mode)
            .spawn()
            .expect("spawn")
    };
    let p = tls_only("allow");
    connects(&p, &t.host());
    drop(p);
    let p = tls_only("disable");
    fails_with(&p, "pg_hba.conf");
    drop(p);
    // A user that may log in without TLS gets a plain session under allow.
    let p = t.builder().env("PGSSLMODE", "allow").spawn().expect("spawn");
    connects(&p, &t.host());
    let (tls, plain) = t.pg_status_sessions();
    assert!(tls == 0 && plain >= 1, "allow: {tls} over TLS, {plain} plain");
}

#[test]
fn tls_crl_rejects_a_revoked_server_certificate() {
    let Some(t) = tls_cluster("tls_crl_rejects_a_revoked_server_certificate") else { return };
    let ca = path(&t.files.ca().cert);
    let clean = t.files.crl("ca", "clean.crl", &[]).expect("empty CRL");
    let p = t
        .builder()
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .env("PGSSLCRL", path(&clean))
        .spawn()
        .expect("spawn");
    connects(&p, &t.host());
    drop(p);

    let revoked = t.files.crl("ca", "revoked.crl", &[&t.server]).expect("CRL revoking the server");
    let p = t
        .builder()
        .env("PGSSLMODE", "verify-ca")
        .env("PGSSLROOTCERT", &ca)
        .env("PGSSLCRL", path(&revoked))
        .spawn()
        .expect("spawn");
    fails_with(&p, "Revoked");
}

#[test]
fn tls_default_files_in_home_are_used_as_libpq_uses_them() {
    let Some(t) = tls_cluster("tls_default_files_in_home_are_used_as_libpq_uses_them") else { return };
    let home = tempfile::tempdir().expect("temp dir");
    let dir = home.path().join(".postgresql");
    std::fs::create_dir(&dir).expect("~/.postgresql");
    let install = |from: &std::path::Path, name: &str| std::fs::copy(from, dir.join(name)).expect("copy");
    let with_home = |mode: &str| t.builder().env("HOME", path(home.path())).env("PGSSLMODE", mode);

    // No root.crt: the verifying modes have nothing to verify with and stop at start-up.
    let (code, lines) = start_fails(with_home("verify-full"));
    assert_eq!(code, Some(2), "{lines:?}");
    let default = format!("{}/root.crt", dir.display());
    assert!(lines.iter().any(|l| l.contains(&default)), "the line names {default}: {lines:?}");

    // Something there that is not a file is refused, not passed over.
    std::fs::create_dir(dir.join("root.crt")).expect("a directory");
    let (code, lines) = start_fails(with_home("require"));
    assert_eq!(code, Some(2), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("root.crt") && l.contains("not a regular file")), "{lines:?}");
    std::fs::remove_dir(dir.join("root.crt")).expect("remove the directory");

    // ~/.postgresql/root.crt stands in for PGSSLROOTCERT.
    install(&t.files.ca().cert, "root.crt");
    let p = with_home("verify-full").spawn().expect("spawn");
    connects(&p, &t.host());
    drop(p);

    // ... also in require, which then checks the chain, as libpq does once the file exists.
    let other = t.files.make_ca("other").expect("another CA");
    install(&other.cert, "root.crt");
    let p = with_home("require").spawn().expect("spawn");
    fails_with(&p, "invalid peer certificate");
    drop(p);
    install(&t.files.ca().cert, "root.crt");

    // ~/.postgresql/postgresql.crt and postgresql.key are the client certificate.
    let client = t.files.client_cert(&t.files.ca(), "client", CLIENT_CERT_USER).expect("client certificate");
    let as_client = || {
        with_home("verify-full")
            .env("pg_status__pg_user", CLIENT_CERT_USER)
            .env("pg_status__pg_password", TLS_USER_PASSWORD)
    };
    let p = as_client().spawn().expect("spawn");
    fails_with(&p, "requires a valid client certificate");
    drop(p);
    install(&client.cert, "postgresql.crt");
    let (code, lines) = start_fails(as_client());
    assert_eq!(code, Some(2), "a certificate without its key: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("PGSSLKEY") && l.contains("postgresql.key")), "{lines:?}");
    install(&client.key, "postgresql.key");
    let p = as_client().spawn().expect("spawn");
    connects(&p, &t.host());
}

/// Runs the binary until it exits (it must, for a bad configuration) and returns its status and stderr.
fn start_fails(builder: PgStatusBuilder) -> (Option<i32>, Vec<String>) {
    let mut p = builder.spawn().expect("spawn");
    let status = p.wait_exit(Duration::from_secs(10)).expect("pg-status exits");
    (status.code(), p.stderr().texts())
}

#[test]
fn tls_bad_files_stop_start_up_with_a_line_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("write");
    let garbage = path(&garbage);
    let missing = path(&dir.path().join("missing.crt"));
    let base = || common::builder().hosts(&[("127.0.0.1", 1u16)]);
    let cases: Vec<(PgStatusBuilder, &str, String)> = vec![
        (base().env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", &missing), "PGSSLROOTCERT", missing.clone()),
        (base().env("PGSSLMODE", "verify-ca").env("PGSSLROOTCERT", &garbage), "PGSSLROOTCERT", garbage.clone()),
        (base().env("PGSSLMODE", "require").env("PGSSLCRL", &missing), "PGSSLCRL", missing.clone()),
        (base().env("PGSSLCERT", &missing).env("PGSSLKEY", &garbage), "PGSSLCERT", missing.clone()),
        (base().env("PGSSLMODE", "verify-full"), "PGSSLMODE", "verify-full".to_owned()),
    ];
    for (builder, var, value) in cases {
        let (code, stderr) = start_fails(builder);
        assert_eq!(code, Some(2), "{var}={value}: exit status; stderr {stderr:?}");
        assert_eq!(stderr.len(), 1, "{var}={value}: one line on stderr: {stderr:?}");
        assert!(stderr[0].starts_with(&format!("{var}={value:?}: ")), "{var}={value}: {stderr:?}");
    }
}
