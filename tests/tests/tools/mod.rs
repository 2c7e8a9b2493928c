//! Shared helpers of the deployment tests: the repository's files, and external tools (dpkg-deb, promtool,
//! hadolint, ...) that must be present under CI and are skipped loudly elsewhere.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pg_status_tests::is_ci;

/// Where scripts/install-tools.sh installs the PyPI tools (a virtual environment in `venv/`).
pub const PYPI_TOOLS: &str = "/opt/pg-status-tools";

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// The text of a file of the repository, by its path from the root.
pub fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// Whether `program` can be run (found on `PATH`, or a path that exists).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// `Some(())` when every program is present; under CI a missing one panics, elsewhere the test is skipped with
/// a loud message naming what to install.
pub fn require(test: &str, programs: &[&str]) -> Option<()> {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return Some(());
    }
    if is_ci() {
        panic!("{test}: {missing:?} required under CI (scripts/install-tools.sh installs them)");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPING {test}: {missing:?} not found; run scripts/install-tools.sh as root");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    None
}

/// Runs a command to completion with its output captured.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Standard output and error of a finished command, together.
pub fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a command, panics with its output unless it succeeds, and returns its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, said(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every variable a table row of the README documents (`pg_status__*` and `PGSSL*`), with the default as the
/// row's second column gives it (empty when none or when the variable is required).
pub fn readme_variables() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut mentioned = Vec::new();
    for line in read("README.md").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // A table row: "", first column, second column, ..., "".
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let names: Vec<String> = cells[1]
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .filter(|n| n.starts_with("pg_status__") || n.starts_with("PGSSL"))
            .collect();
        if names.is_empty() || names.len() != cells[1].split(',').count() {
            continue;
        }
        let default = cells[2].trim_matches('`');
        let default = if default.starts_with('(') { "" } else { default };
        for name in names {
            vars.push((name, default.to_owned()));
        }
        // A variable named only in a row's description (`pg_status__current_dc_env`) has no default.
        for token in line.split('`').skip(1).step_by(2) {
            let is_name = token.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if is_name && (token.starts_with("pg_status__") || token.starts_with("PGSSL")) {
                mentioned.push(token.to_owned());
            }
        }
    }
    for name in mentioned {
        if !vars.iter().any(|(n, _)| *n == name) {
            vars.push((name, String::new()));
        }
    }
    vars
}
