//! The build manifest parser (TOML, key checks, value checks) on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = acs_builder::config::parse_manifest(text, "fuzz.toml");
    }
});
