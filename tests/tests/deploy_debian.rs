//! The Debian package: `cargo deb -p pg-status` builds it (from the faster `deb-check` profile here), it holds
//! the binary, the systemd unit and the settings file and depends on libc only, its settings file documents
//! every variable of the README with the README's default, the unit passes `systemd-analyze`, and the
//! unpacked binary, started with the packaged settings, serves a real cluster until `/ready` answers 200.

mod common;
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pg_status_tests::{postgres_or_skip, Cluster, ClusterOptions, PgStatusBuilder};
use tools::{output, read, readme_variables, repo, require, run_ok, said};

/// Builds the package into a fresh directory and returns its path.
fn build_package(out_dir: &Path) -> PathBuf {
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .current_dir(repo())
            .args(["deb", "-p", "pg-status", "--profile", "deb-check", "--output"])
            .arg(out_dir),
    );
    eprintln!("cargo deb took {:.1} s", started.elapsed().as_secs_f64());
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .expect("package directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package expected in {}: {debs:?}", out_dir.display());
    debs[0].clone()
}

/// The `#NAME=value` lines of the packaged settings file: every setting, commented out.
fn commented_settings(text: &str) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            assert!(line.trim().is_empty(), "an active setting in the packaged defaults: {line:?}");
            continue;
        };
        if let Some((name, value)) = rest.split_once('=') {
            if name.starts_with("pg_status__") || name.starts_with("PGSSL") {
                let previous = settings.insert(name.to_owned(), value.to_owned());
                assert!(previous.is_none(), "{name} is listed twice");
            }
        }
    }
    settings
}

#[test]
fn settings_file_lists_every_documented_variable_with_its_default() {
    let listed = commented_settings(&read("deploy/debian/pg-status.default"));
    let documented = readme_variables();
    assert!(documented.len() >= 25, "the README's tables should document the variables: {documented:?}");
    let mut c = common::Checks::new();
    for (name, default) in &documented {
        c.eq(&format!("{name} in deploy/debian/pg-status.default"), listed.get(name), Some(default));
    }
    for name in listed.keys() {
        c.check(documented.iter().any(|(n, _)| n == name), || format!("{name} is listed but not documented"));
    }
    c.finish();
}

#[test]
fn package_installs_a_working_service() {
    let test = "package_installs_a_working_service";
    let Some(bins) = postgres_or_skip(test) else { return };
    let Some(()) = require(test, &["cargo-deb", "dpkg-deb", "dpkg-shlibdeps", "systemd-analyze"]) else { return };
    let work = tempfile::tempdir().expect("temporary directory");
    let deb = build_package(&work.path().join("out"));
    let mut c = common::Checks::new();

    // Dependencies: the C library only (the binary links nothing else a package provides).
    let depends = run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Depends"));
    let depends: Vec<&str> = depends.trim().split(',').map(str::trim).collect();
    c.check(depends.len() == 1 && depends[0].starts_with("libc6"), || format!("Depends: {depends:?}"));
    let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    c.check(info.contains("Package: pg-status"), || format!("dpkg-deb --info:\n{info}"));
    let conffiles = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("conffiles"));
    c.eq("conffiles", conffiles.trim(), "/etc/default/pg-status");

    // Contents: path -> mode string, e.g. "./usr/bin/pg-status" -> "-rwxr-xr-x".
    let listing = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let contents: BTreeMap<&str, &str> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((*fields.get(5)?, *fields.first()?))
        })
        .collect();
    for (path, mode) in [
        ("./usr/bin/pg-status", "-rwxr-xr-x"),
        ("./usr/lib/systemd/system/pg-status.service", "-rw-r--r--"),
        // The settings file may hold the password.
        ("./etc/default/pg-status", "-rw-------"),
    ] {
        c.eq(&format!("mode of {path}"), contents.get(path).copied(), Some(mode));
    }
    c.check(listing.lines().all(|l| l.contains(" 0/0 ")), || format!("files not owned by root:\n{listing}"));

    // Unpacked into a temporary root, the files are the repository's.
    let root = work.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let packaged_unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/pg-status.service")).expect("unit");
    c.check(packaged_unit == read("deploy/debian/pg-status.service"), || "the packaged unit differs".into());
    let packaged_defaults = std::fs::read_to_string(root.join("etc/default/pg-status")).expect("defaults");
    c.check(packaged_defaults == read("deploy/debian/pg-status.default"), || "the packaged defaults differ".into());
    for line in [
        "EnvironmentFile=/etc/default/pg-status",
        "ExecStart=/usr/bin/pg-status",
        "Restart=on-failure",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        c.check(packaged_unit.lines().any(|l| l == line), || format!("the unit lacks {line}"));
    }

    // The unit as systemd reads it, resolved inside the unpacked root (ExecStart must exist there).
    let verify = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={}", root.display()))
            .arg("pg-status.service"),
    );
    c.check(verify.status.success() && said(&verify).trim().is_empty(), || {
        format!("systemd-analyze verify ({}):\n{}", verify.status, said(&verify))
    });
    // Exposure is 0 (locked down) to 10 (unprotected); the threshold is in tenths.
    let security = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg("pg-status.service"),
    );
    c.check(security.status.success(), || format!("exposure above 2.0:\n{}", said(&security)));

    // The packaged binary, with every packaged default switched on, serves a real cluster.
    let cluster = Cluster::start(&bins, ClusterOptions::with_replicas(1)).expect("cluster starts");
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let mut builder = PgStatusBuilder::new(&root.join("usr/bin/pg-status")).expect("builder");
    let own = ["pg_status__hosts", "pg_status__pg_port", "pg_status__http_host", "pg_status__http_port"];
    for (name, value) in commented_settings(&packaged_defaults) {
        if !value.is_empty() && !own.contains(&name.as_str()) {
            builder = builder.env(&name, value);
        }
    }
    let builder = builder.hosts(&[(primary.host(), primary.port()), (replica.host(), replica.port())]);
    let p = builder.spawn().expect("the packaged pg-status starts");
    p.wait_ready(common::STARTUP).expect("the packaged pg-status becomes ready");
    common::settle(&p, "/master", &primary.host());
    common::settle(&p, "/replica", &replica.host());
    c.check(!p.output_dump().contains("warning"), || {
        format!("warnings with the packaged defaults:\n{}", p.output_dump())
    });
    c.finish();
}
