//! The shard reader (footer check, schema v1 check, row decoding) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file(data, "parquet");
    let _ = acs_schema::read_shard_footer(&path);
    let _ = acs_schema::read_shard(&path);
    let _ = std::fs::remove_file(&path);
});
