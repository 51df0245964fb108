//! The build manifest parser (TOML, key checks, value checks) on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(|data: &[u8]| harness::manifest(data));
