//! Fuzz targets of pg-status. The checks live in [`checks`], which the core's corpus replay test
//! (`core/tests/fuzz_corpus.rs`) includes by path, so `cargo test` runs every committed corpus file through
//! the very same code on stable Rust.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod checks;
