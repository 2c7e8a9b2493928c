//! Fuzz target `lsn`: see [`pg_status_fuzz::checks::check_lsn`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_status_fuzz::checks::check_lsn(data));
