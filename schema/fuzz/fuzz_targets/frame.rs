//! `bigpeer_sync_fuzz::frame` under libFuzzer (see `schema/fuzz/Cargo.toml`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bigpeer_sync_fuzz::frame(data));
