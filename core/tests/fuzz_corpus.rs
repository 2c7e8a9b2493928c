//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same checks the fuzz
//! targets run, so plain `cargo test` exercises the corpora on stable Rust without cargo-fuzz.

#[path = "../../fuzz/src/checks/mod.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

/// Runs `check` on every file of the target's corpus and fails naming each file that failed.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} {target} inputs failed: {failed:#?}", failed.len(), files.len());
}

#[test]
fn http_request_corpus() {
    replay("http_request", checks::check_http_request);
}

#[test]
fn lsn_corpus() {
    replay("lsn", checks::check_lsn);
}

#[test]
fn config_corpus() {
    replay("config", checks::check_config);
}

#[test]
fn observation_corpus() {
    replay("observation", checks::check_observation);
}
