//! The Docker build without a container engine: hadolint accepts the Dockerfile, and the build context the
//! compose file sends (the repository root, filtered by the root `.dockerignore`) is small, holds no build
//! output or history, and still holds everything `cargo build --release -p pg-status` needs.

mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use tools::{output, read, repo, require, run_ok, said};

/// One `.dockerignore` rule: a path pattern, or an exception (`!pattern`) that brings paths back.
struct Rule {
    segments: Vec<String>,
    exception: bool,
}

/// The rules of a `.dockerignore`, in order (the last matching rule decides).
fn rules(text: &str) -> Vec<Rule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (exception, pattern) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            assert!(!pattern.contains('['), "character classes are not supported by this check: {l}");
            let segments = pattern.trim_matches('/').split('/').filter(|s| !s.is_empty() && *s != ".");
            Rule { segments: segments.map(str::to_owned).collect(), exception }
        })
        .collect()
}

/// Whether one path segment matches a pattern segment with `*` and `?`.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name) || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Whether a path (as segments) matches a pattern (as segments, `**` for any number of them).
fn path_matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => (0..=path.len()).any(|skip| path_matches(&pattern[1..], &path[skip..])),
        Some(p) => {
            !path.is_empty()
                && segment_matches(p.as_bytes(), path[0].as_bytes())
                && path_matches(&pattern[1..], &path[1..])
        }
    }
}

/// Whether the rules leave `rel` out of the context: a rule matches a path or any directory above it.
fn excluded(rules: &[Rule], rel: &str) -> bool {
    let segments: Vec<&str> = rel.split('/').collect();
    let mut out = false;
    for rule in rules {
        if (1..=segments.len()).any(|n| path_matches(&rule.segments, &segments[..n])) {
            out = !rule.exception;
        }
    }
    out
}

/// Every file the builder would send: the tree under `root` minus what the rules leave out, with sizes.
fn context(root: &Path, rules: &[Rule]) -> Vec<(String, u64)> {
    let may_bring_back = rules.iter().any(|r| r.exception);
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).expect("read_dir").flatten() {
            let rel_path = dir.join(entry.file_name());
            let rel = rel_path.to_string_lossy().into_owned();
            let kind = entry.file_type().expect("file type");
            let out = excluded(rules, &rel);
            if kind.is_dir() {
                if !out || may_bring_back {
                    dirs.push(rel_path);
                }
            } else if !out {
                files.push((rel, entry.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(()) = require("dockerfile_passes_hadolint", &["hadolint"]) else { return };
    let out = output(Command::new("hadolint").current_dir(repo()).arg("docker/Dockerfile"));
    assert!(out.status.success() && said(&out).trim().is_empty(), "hadolint:\n{}", said(&out));
}

#[test]
fn matcher_follows_the_ignore_file_rules() {
    let r = rules("target\n**/target\nfuzz/corpus\n*.log\n!keep.log\ndocs/**/*.png\n");
    for (path, out) in [
        ("target", true),
        ("target/release/pg-status", true),
        ("fuzz/target/x", true),
        ("fuzz/corpus/http_request/abc", true),
        ("fuzz/src/lib.rs", false),
        ("a.log", true),
        ("keep.log", false),
        ("sub/a.log", false),
        ("docs/a/b/c.png", true),
        ("docs/c.png", true),
        ("targets/x", false),
        ("core/src/lib.rs", false),
    ] {
        assert_eq!(excluded(&r, path), out, "{path}");
    }
}

#[test]
fn build_context_is_small_and_holds_what_the_build_needs() {
    let root = repo();
    // The compose file builds with the repository root as context; the builder reads .dockerignore there.
    let compose = read("docker/docker-compose.yml");
    assert!(compose.contains("context: ..") && compose.contains("dockerfile: docker/Dockerfile"), "{compose}");
    assert!(!root.join("docker/.dockerignore").exists(), "docker/.dockerignore is not read for this context");
    let rules = rules(&read(".dockerignore"));
    let files = context(&root, &rules);
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    eprintln!("build context: {} files, {:.1} KiB", files.len(), total as f64 / 1024.0);

    let unwanted: Vec<&String> = files
        .iter()
        .map(|(f, _)| f)
        .filter(|f| {
            f.starts_with("target/")
                || f.starts_with(".git/")
                || f.contains("/target/")
                || f.starts_with("fuzz/corpus/")
        })
        .collect();
    assert!(unwanted.is_empty(), "sent to the builder: {unwanted:?}");
    let mut largest = files.clone();
    largest.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    assert!(total < 4 << 20, "the context is {total} bytes; largest: {:?}", &largest[..largest.len().min(10)]);

    // Everything git tracks except what the rules leave out on purpose is there: the workspace's manifests
    // and the sources of every member (cargo reads every member to build one).
    let tracked = run_ok(Command::new("git").current_dir(&root).args(["ls-files", "--cached"]));
    let sent: std::collections::BTreeSet<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    let missing: Vec<&str> =
        tracked.lines().filter(|f| !excluded(&rules, f) && root.join(f).exists() && !sent.contains(f)).collect();
    assert!(missing.is_empty(), "tracked files missing from the context: {missing:?}");
    for needed in ["Cargo.toml", "Cargo.lock", "core/Cargo.toml", "runtime/Cargo.toml", "runtime/src/main.rs"] {
        assert!(sent.contains(needed), "{needed} is not in the context");
    }
    let left_out: Vec<&str> = tracked.lines().filter(|f| excluded(&rules, f)).collect();
    assert!(left_out.iter().all(|f| f.starts_with("fuzz/")), "tracked files left out: {left_out:?}");

    // The context alone is a workspace cargo can load: a copy of it resolves offline with the same lock file.
    let copy = tempfile::tempdir().expect("temporary directory");
    for (f, _) in &files {
        let to = copy.path().join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(root.join(f), &to).expect("copy");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata = run_ok(
        Command::new(cargo)
            .current_dir(copy.path())
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--locked",
                "--filter-platform",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", copy.path().join("target")),
    );
    assert!(metadata.contains("\"name\":\"pg-status\""), "pg-status missing from cargo metadata");
}
