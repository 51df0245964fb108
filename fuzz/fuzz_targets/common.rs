//! Shared by the source fuzz targets: run a prompt-source reader on fuzzer bytes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use acs_builder::config::{parse_manifest, LoadedManifest};
use acs_builder::sources::{open_source, SourceBatch};

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

/// Reads `data` as a source of `kind`: any outcome but a panic is fine.
pub fn read_source(kind: &str, extension: &str, data: &[u8]) {
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
    let source = open_source(&loaded.manifest.sources[0], &loaded).expect("known kind");
    let _ = source.read(&mut batch);
    let _ = std::fs::remove_file(&path);
}
