//! What a hub ETag promises about a file's bytes, and checking it. Files stored with Git LFS
//! (weights) carry the sha256 of their contents (`X-Linked-Etag`); plain git files (configs,
//! tokenizer) carry their git blob id, the sha1 of `"blob {len}\0"` followed by the bytes.

use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The hash a file must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// sha256 of the contents (an LFS object id), 64 lowercase hex digits.
    Sha256(String),
    /// git blob sha1, 40 lowercase hex digits.
    GitSha1(String),
}

impl Expected {
    /// Reads an ETag header value (quotes and a weak `W/` prefix removed). `None` when it is
    /// neither a sha256 nor a git sha1, so the file could not be verified.
    pub fn from_etag(etag: &str) -> Option<Self> {
        let etag = normalize_etag(etag);
        if !etag.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let etag = etag.to_ascii_lowercase();
        match etag.len() {
            64 => Some(Self::Sha256(etag)),
            40 => Some(Self::GitSha1(etag)),
            _ => None,
        }
    }

    /// The expected hash (also the blob's file name in the cache).
    pub fn hex(&self) -> &str {
        match self {
            Self::Sha256(h) | Self::GitSha1(h) => h,
        }
    }

    /// The name of the hash, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sha256(_) => "sha256",
            Self::GitSha1(_) => "git blob sha1",
        }
    }

    /// The same kind of hash over the file at `path`.
    pub fn hash_file(&self, path: &Path) -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        match self {
            Self::Sha256(_) => {
                let mut hasher = Sha256::new();
                copy_into(&mut file, |chunk| hasher.update(chunk))?;
                Ok(hex::encode(hasher.finalize()))
            }
            Self::GitSha1(_) => {
                let len = file.metadata()?.len();
                let mut hasher = Sha1::new();
                hasher.update(format!("blob {len}\0").as_bytes());
                copy_into(&mut file, |chunk| hasher.update(chunk))?;
                Ok(hex::encode(hasher.finalize()))
            }
        }
    }
}

/// An ETag without its quotes and weak prefix.
pub fn normalize_etag(etag: &str) -> &str {
    let etag = etag.trim();
    etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"')
}

fn copy_into(file: &mut std::fs::File, mut sink: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        sink(&buffer[..n]);
    }
}

/// The git blob id of `bytes` (what `git hash-object` prints).
pub fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin` and the empty blob.
        assert_eq!(
            git_blob_sha1(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            git_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn etags_name_their_hash() {
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(
            Expected::from_etag(&format!("\"{}\"", sha.to_uppercase())),
            Some(Expected::Sha256(sha.to_owned()))
        );
        assert_eq!(
            Expected::from_etag("W/\"ce013625030ba8dba906f756967f9e9ca394464a\""),
            Some(Expected::GitSha1(
                "ce013625030ba8dba906f756967f9e9ca394464a".to_owned()
            ))
        );
        for bad in [
            "\"abc\"",
            "\"../../etc/passwd\"",
            "",
            "\"xyz4dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"",
        ] {
            assert_eq!(Expected::from_etag(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let sha = Expected::Sha256(String::new());
        assert_eq!(
            sha.hash_file(&path).unwrap(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        std::fs::write(&path, b"hello\n").unwrap();
        let git = Expected::GitSha1(String::new());
        assert_eq!(
            git.hash_file(&path).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
