//! The fuzz harness: one function per target, each feeding arbitrary bytes to one parser of
//! acs. The cargo-fuzz targets call these, and an ordinary `cargo test` replays the committed
//! corpora through the same functions (tests/e2e/fuzz_corpus.rs). Every outcome but a panic
//! (or a hang) is fine.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use acs_builder::manifest::{parse_manifest, LoadedManifest};
use acs_builder::prompts::sources::{open_source, SourceBatch};

/// Writes `data` to a fresh file in the temp folder (the readers take paths).
pub fn scratch_file(data: &[u8], extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "acs-fuzz-{}-{}.{extension}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(data).expect("write temp file");
    path
}

/// Reads `data` as a source of `kind`.
fn read_source(kind: &str, extension: &str, data: &[u8]) {
    let path = scratch_file(data, extension);
    let text = format!(
        "[[sources]]\nkind = \"{kind}\"\npath = \"{}\"\ncategory = \"sexual\"\n",
        path.display()
    );
    let manifest = parse_manifest(&text, "fuzz.toml").expect("the fuzz manifest is valid");
    let loaded = LoadedManifest {
        manifest,
        file: PathBuf::from("fuzz.toml"),
        base_dir: PathBuf::from("."),
    };
    let mut batch = SourceBatch::default();
    if let Ok((source, _files)) = open_source(&loaded.manifest.sources[0], 0, &loaded) {
        let _ = source.read(&mut batch);
    }
    let _ = std::fs::remove_file(&path);
}

/// The build manifest parser (TOML, key checks, value checks) on arbitrary text.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_manifest(text, "fuzz.toml");
    }
}

/// The `pairs-jsonl` source reader.
pub fn pairs_jsonl(data: &[u8]) {
    read_source("pairs-jsonl", "jsonl", data);
}

/// The `pairs-csv` source reader.
pub fn pairs_csv(data: &[u8]) {
    read_source("pairs-csv", "csv", data);
}

/// The `prompts-txt` source reader.
pub fn prompts_txt(data: &[u8]) {
    read_source("prompts-txt", "txt", data);
}

/// The `i2p-csv` source reader with its filters.
pub fn i2p_csv(data: &[u8]) {
    read_source("i2p-csv", "csv", data);
}

/// The `i2p-parquet` source reader.
pub fn i2p_parquet(data: &[u8]) {
    read_source("i2p-parquet", "parquet", data);
}

/// The column-mapped `prompts` reader on a JSONL table.
pub fn prompts_jsonl(data: &[u8]) {
    read_source("prompts", "jsonl", data);
}

/// The shard reader (footer check, schema v1 check, row decoding) on arbitrary bytes.
pub fn shard_reader(data: &[u8]) {
    let path = scratch_file(data, "parquet");
    let _ = acs_schema::read_shard_footer(&path);
    let _ = acs_schema::read_shard(&path);
    let _ = std::fs::remove_file(&path);
}

/// Every target, by name (as `cargo fuzz list` names them and `fuzz/corpus/` holds them).
pub const TARGETS: [(&str, fn(&[u8])); 8] = [
    ("manifest", manifest),
    ("pairs_jsonl", pairs_jsonl),
    ("pairs_csv", pairs_csv),
    ("prompts_txt", prompts_txt),
    ("i2p_csv", i2p_csv),
    ("i2p_parquet", i2p_parquet),
    ("prompts_jsonl", prompts_jsonl),
    ("shard_reader", shard_reader),
];
