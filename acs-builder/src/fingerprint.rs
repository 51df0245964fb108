//! Content fingerprints: sha256 of the model files that determine the pixels.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::AcsError;

/// sha256 over `relative-path \t file-sha256 \n` lines of `files`, sorted by path, so the
/// fingerprint names the content, not where the folder lives.
pub fn fingerprint_files(root: &Path, files: &[PathBuf]) -> Result<String, AcsError> {
    let mut lines: Vec<String> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap_or(file);
            let digest = acs_schema::sha256_file(file)?;
            Ok(format!("{}\t{digest}\n", relative.display()))
        })
        .collect::<Result<_, AcsError>>()?;
    lines.sort();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}
