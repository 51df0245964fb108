//! Content fingerprints: sha256 of the model files that determine the pixels.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::runtime::error::RuntimeError;

/// sha256 over `relative-path \t file-sha256 \n` lines of `files`, sorted by path, so the
/// fingerprint names the content, not where the folder lives.
pub fn fingerprint_files(root: &Path, files: &[PathBuf]) -> Result<String, RuntimeError> {
    let mut lines: Vec<String> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap_or(file);
            let digest = sha256_file(file)?;
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
