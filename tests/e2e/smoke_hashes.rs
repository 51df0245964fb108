//! The smoke build's bytes do not change by accident: `manifests/smoke.toml` is built with the
//! `acs` binary and the sha256 of every output file is compared with the committed list
//! `tests/data/smoke-build.sha256` (`sha256sum` format, sorted by path).
//!
//! An intended change of the output (a new acs version, which the manifest and every row
//! record; a schema, metric, sampler or card change) means regenerating the list, from the
//! repository root:
//!
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/acs/target
//! cargo build --release --bin acs
//! tmp=$(mktemp -d)
//! ACS_HOME="$tmp/home" "$CARGO_TARGET_DIR/release/acs" build \
//!     --manifest manifests/smoke.toml --out "$tmp/smoke"
//! (cd "$tmp/smoke" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
//!     > tests/data/smoke-build.sha256
//! rm -rf "$tmp"
//! ```
//!
//! and saying in the commit why the bytes changed.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::util::{build, relative_files, repo_root, smoke_manifest, stderr};

const REFERENCE: &str = "tests/data/smoke-build.sha256";

/// `./relative/path` -> sha256 (hex) of a `sha256sum` listing.
fn parse(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (hash, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("{REFERENCE}: not `HASH  PATH`: {line}"));
            (path.to_owned(), hash.to_owned())
        })
        .collect()
}

#[test]
fn the_smoke_build_has_the_committed_bytes() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("smoke");
    let run = build(home.path(), &smoke_manifest(), &out);
    assert!(run.status.success(), "smoke build failed: {}", stderr(&run));

    let built: BTreeMap<String, String> = relative_files(&out)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            (format!("./{name}"), hex::encode(Sha256::digest(&bytes)))
        })
        .collect();
    let listing: String = built
        .iter()
        .map(|(path, hash)| format!("{hash}  {path}\n"))
        .collect();
    let reference = std::fs::read_to_string(repo_root().join(REFERENCE)).unwrap();
    let expected = parse(&reference);

    let mut differ = Vec::new();
    for (path, hash) in &expected {
        match built.get(path) {
            None => differ.push(format!("{path}: missing from the build")),
            Some(got) if got != hash => {
                differ.push(format!("{path}: sha256 {got}, the list has {hash}"))
            }
            Some(_) => {}
        }
    }
    for path in built.keys().filter(|p| !expected.contains_key(*p)) {
        differ.push(format!("{path}: not in the list"));
    }
    assert!(
        differ.is_empty(),
        "the smoke build's output differs from {REFERENCE}:\n  {}\n\
         If the change is intended (e.g. a new acs version, which the manifest and every row \
         record), regenerate the list with the command at the top of tests/e2e/smoke_hashes.rs \
         and say why in the commit. This build's list:\n{listing}",
        differ.join("\n  ")
    );
}
