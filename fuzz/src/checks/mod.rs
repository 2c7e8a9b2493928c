//! The checks behind pg-status's fuzz targets, shared by `cargo fuzz` and the corpus replay test; one
//! module per target.
//!
//! Each `check_*` function takes raw bytes, decodes them in the simple way its documentation describes,
//! runs the core and panics when the core panics or answers something DESIGN.md does not allow. Expected
//! answers come from the reference model ([`pg_status_reference`]: election, lag, filters, LSN text) and,
//! for what only the fuzzer checks (parameters, formats, configuration, poll rows), from the design's
//! text stated here; never from the core's own helpers, so a core that is consistently wrong is still
//! caught.
//!
//! `core/tests/fuzz_corpus.rs` includes this folder by path, so it may use only pg-status-core,
//! pg-status-reference, serde_json and std, and must build on the workspace's minimum Rust version.

pub mod config;
pub mod http_request;
pub mod lsn;
pub mod observation;

pub use config::check_config;
pub use http_request::check_http_request;
pub use lsn::check_lsn;
pub use observation::check_observation;

/// Fuzz bytes as text, invalid UTF-8 replaced by U+FFFD.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
