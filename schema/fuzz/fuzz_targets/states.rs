//! `bigpeer_sync_fuzz::states` under libFuzzer (see `schema/fuzz/Cargo.toml`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bigpeer_sync_fuzz::states(data));
