//! Test harness for pg-status integration tests.
