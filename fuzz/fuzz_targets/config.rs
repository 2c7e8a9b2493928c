//! Fuzz target `config`: see [`pg_status_fuzz::checks::check_config`] for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pg_status_fuzz::checks::check_config(data));
