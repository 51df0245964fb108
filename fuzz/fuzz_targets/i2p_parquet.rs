//! The `i2p-parquet` prompt-source reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_source("i2p-parquet", "parquet", data);
});
