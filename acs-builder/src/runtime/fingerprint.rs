//! Content fingerprints: sha256 of the model files that determine the pixels. Hashing a 3.4 GB
//! UNet costs seconds on every build, so file hashes are cached in `ACS_HOME/file-hashes.json`,
//! keyed by the file's canonical path, size and modification time (as build tools do): an
//! unchanged file is not read again; any write to it changes its modification time.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::error::RuntimeError;
use crate::runtime::model::tiny::acs_home;

/// What the cache knows of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedHash {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

/// The cache file's entries by canonical path (loaded once per process).
static HASH_CACHE: Mutex<Option<BTreeMap<String, CachedHash>>> = Mutex::new(None);

fn cache_file() -> PathBuf {
    acs_home().join("file-hashes.json")
}

/// The (canonical path, size, modification time) a file is cached under, if it has them.
fn cache_key(path: &Path) -> Option<(String, u64, u128)> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((canonical.to_str()?.to_owned(), meta.len(), modified))
}

/// The sha256 of a file (lowercase hex), from the cache when the file is unchanged; a file
/// hashed anew is added to the cache (written atomically; a cache that cannot be read or
/// written only costs the hashing).
pub fn cached_sha256_file(path: &Path) -> Result<String, RuntimeError> {
    let Some((key, size, modified_ns)) = cache_key(path) else {
        return sha256_file(path);
    };
    let mut cache = HASH_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let entries = cache.get_or_insert_with(|| {
        std::fs::read(cache_file())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    });
    if let Some(hit) = entries.get(&key) {
        if hit.size == size && hit.modified_ns == modified_ns {
            return Ok(hit.sha256.clone());
        }
    }
    let sha256 = sha256_file(path)?;
    entries.insert(
        key,
        CachedHash {
            size,
            modified_ns,
            sha256: sha256.clone(),
        },
    );
    // Files that are gone are forgotten, so the cache stays as small as what is in use.
    entries.retain(|path, _| Path::new(path).exists());
    save(entries);
    Ok(sha256)
}

/// Writes the cache beside itself and renames it into place.
fn save(entries: &BTreeMap<String, CachedHash>) {
    let file = cache_file();
    let Some(dir) = file.parent() else { return };
    let written = std::fs::create_dir_all(dir).ok().and_then(|()| {
        let mut temp = tempfile::NamedTempFile::new_in(dir).ok()?;
        serde_json::to_writer(&mut temp, entries).ok()?;
        temp.persist(&file).ok()
    });
    if written.is_none() {
        tracing::debug!(
            "{}: the file hash cache could not be written",
            file.display()
        );
    }
}

/// sha256 over `relative-path \t file-sha256 \n` lines of `files`, sorted by path, so the
/// fingerprint names the content, not where the folder lives.
pub fn fingerprint_files(root: &Path, files: &[PathBuf]) -> Result<String, RuntimeError> {
    let mut lines: Vec<String> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap_or(file);
            let digest = cached_sha256_file(file)?;
            Ok(format!("{}\t{digest}\n", relative.display()))
        })
        .collect::<Result<_, RuntimeError>>()?;
    lines.sort();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of a file's contents as lowercase hex, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String, RuntimeError> {
    let mut file = std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RuntimeError::io(path, e)),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_hashes_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, b"weights").unwrap();
        let first = cached_sha256_file(&path).unwrap();
        assert_eq!(first, sha256_hex(b"weights"));
        assert_eq!(cached_sha256_file(&path).unwrap(), first);
        // A rewrite changes the modification time: the new content is hashed.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"other!!").unwrap();
        assert_eq!(cached_sha256_file(&path).unwrap(), sha256_hex(b"other!!"));
    }
}
