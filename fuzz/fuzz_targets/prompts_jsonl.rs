//! The column-mapped `prompts` reader on arbitrary JSONL bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(|data: &[u8]| harness::prompts_jsonl(data));
