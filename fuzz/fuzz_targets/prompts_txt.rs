//! The `prompts-txt` prompt-source reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(|data: &[u8]| harness::prompts_txt(data));
