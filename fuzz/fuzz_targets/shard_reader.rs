//! The shard reader (footer check, schema v1 check, row decoding) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(|data: &[u8]| harness::shard_reader(data));
