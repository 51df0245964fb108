//! Where a dataset lives: a local folder or a folder of an object store.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::SchemaError;
use crate::remote::{is_remote_url, RemoteDir};
use crate::shard_reader::ShardReader;

/// A dataset folder: local, or in object storage (`s3://`, `gs://`, `az://`).
///
/// Parsed from text: a path whose text starts with `s3://`, `gs://` or `az://` is an
/// object-store URL (a local folder named like that needs `./` in front); anything else is a
/// local path.
///
/// ```
/// use acs_schema::DatasetLocation;
///
/// let local = DatasetLocation::parse("out/smoke").unwrap();
/// assert!(!local.is_remote());
/// let remote = DatasetLocation::parse("s3://bucket/runs/smoke").unwrap();
/// assert_eq!(remote.to_string(), "s3://bucket/runs/smoke");
/// ```
#[derive(Debug, Clone)]
pub enum DatasetLocation {
    /// A local folder.
    Local(PathBuf),
    /// A folder of an object store.
    Remote(RemoteDir),
}

impl std::fmt::Display for DatasetLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::Remote(dir) => write!(f, "{dir}"),
        }
    }
}

impl DatasetLocation {
    /// A local path or an object-store URL (see the type's documentation). Building the
    /// store client reads its environment variables; no request is sent.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        if is_remote_url(text) {
            RemoteDir::open(text).map(Self::Remote)
        } else {
            Ok(Self::Local(PathBuf::from(text)))
        }
    }

    /// The location a path names: an object-store URL when its text is one, else the path.
    pub fn from_path(path: &Path) -> Result<Self, SchemaError> {
        match path.to_str() {
            Some(text) if is_remote_url(text) => Self::parse(text),
            Some(text) if other_url_scheme(text).is_some() => Err(SchemaError::invalid(
                Path::new(&crate::remote_client::safe_url_text(text)),
                format!(
                    "`{}://` URLs are not a supported store: a dataset is a local folder or an \
                     s3://, gs:// or az:// URL",
                    other_url_scheme(text).unwrap_or_default()
                ),
            )),
            _ => Ok(Self::Local(path.to_path_buf())),
        }
    }

    /// Whether `path`'s text is an object-store URL.
    pub fn is_url(path: &Path) -> bool {
        path.to_str().is_some_and(is_remote_url)
    }

    /// Whether the dataset is in object storage.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Remote(_))
    }

    /// The local folder, if the dataset is local.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(path) => Some(path),
            Self::Remote(_) => None,
        }
    }

    /// The object-store folder, if the dataset is remote.
    pub fn as_remote(&self) -> Option<&RemoteDir> {
        match self {
            Self::Local(_) => None,
            Self::Remote(dir) => Some(dir),
        }
    }

    /// How errors name `relative` inside the folder: the joined local path or the object's URL.
    pub fn name_of(&self, relative: &str) -> PathBuf {
        match self {
            Self::Local(path) => path.join(relative),
            Self::Remote(dir) => PathBuf::from(dir.url_of(relative)),
        }
    }

    /// The size of file `relative`; `None` when it does not exist.
    pub fn size(&self, relative: &str) -> Result<Option<u64>, SchemaError> {
        match self {
            Self::Local(root) => {
                let path = root.join(relative);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
                    Ok(_) => Err(SchemaError::invalid(&path, "not a regular file")),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(SchemaError::io(&path, e)),
                }
            }
            Self::Remote(dir) => dir.size(relative),
        }
    }

    /// The whole file `relative`; `None` when it does not exist.
    pub fn read(&self, relative: &str) -> Result<Option<Bytes>, SchemaError> {
        match self {
            Self::Local(root) => {
                let path = root.join(relative);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(SchemaError::io(&path, e)),
                }
            }
            Self::Remote(dir) => dir.get(relative),
        }
    }

    /// Writes file `relative` whole: atomically (temporary sibling, rename) on a local disk,
    /// in one request to an object store.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<(), SchemaError> {
        match self {
            Self::Local(root) => crate::atomic::write_atomic(&root.join(relative), bytes),
            Self::Remote(dir) => dir.put(relative, Bytes::copy_from_slice(bytes)),
        }
    }

    /// The SHA-256 (lowercase hex) of file `relative`, read in chunks of 8 MiB.
    pub fn sha256(&self, relative: &str) -> Result<String, SchemaError> {
        use sha2::{Digest, Sha256};
        match self {
            Self::Local(root) => crate::digest::sha256_file(&root.join(relative)),
            Self::Remote(dir) => {
                let len = dir.size(relative)?.ok_or_else(|| SchemaError::Remote {
                    url: dir.url_of(relative),
                    detail: "not found".into(),
                })?;
                let mut hasher = Sha256::new();
                let mut at = 0;
                while at < len {
                    let end = (at + (8 << 20)).min(len);
                    hasher.update(dir.get_range(relative, at..end)?);
                    at = end;
                }
                Ok(hex::encode(hasher.finalize()))
            }
        }
    }

    /// Opens shard `relative` for reading one row group at a time.
    pub fn open_shard(&self, relative: &str) -> Result<ShardReader, SchemaError> {
        ShardReader::open_in(self, relative)
    }

    /// The files under `relative` (a folder; recursively), as paths relative to the dataset
    /// folder, sorted; empty when the folder does not exist.
    pub fn list(&self, relative: &str) -> Result<Vec<String>, SchemaError> {
        match self {
            Self::Local(root) => {
                let dir = root.join(relative);
                let mut out = Vec::new();
                let mut stack = vec![(dir, relative.trim_end_matches('/').to_owned())];
                while let Some((dir, rel)) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let child = if rel.is_empty() {
                            name
                        } else {
                            format!("{rel}/{name}")
                        };
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            stack.push((entry.path(), child));
                        } else {
                            out.push(child);
                        }
                    }
                }
                out.sort();
                Ok(out)
            }
            Self::Remote(dir) => {
                let base = relative.trim_end_matches('/');
                Ok(dir
                    .child(base)
                    .list()?
                    .into_iter()
                    .map(|(rel, _)| {
                        if base.is_empty() {
                            rel
                        } else {
                            format!("{base}/{rel}")
                        }
                    })
                    .collect())
            }
        }
    }
}

/// The scheme of a URL that is not an object store's (`https`, `file`, `hf`, ...): a word of
/// letters, digits, `+`, `-` or `.` starting with a letter, then `://`.
fn other_url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && !is_remote_url(text)).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_urls() {
        let local = DatasetLocation::parse("out/x").unwrap();
        assert_eq!(local.as_local(), Some(Path::new("out/x")));
        assert_eq!(local.name_of("data/a"), Path::new("out/x/data/a"));
        let remote = DatasetLocation::from_path(Path::new("gs://b/p")).unwrap();
        assert!(remote.is_remote());
        assert_eq!(remote.name_of("data/a"), Path::new("gs://b/p/data/a"));
        assert!(DatasetLocation::is_url(Path::new("az://c/p")));
        assert!(!DatasetLocation::is_url(Path::new("./s3://c/p")));
    }

    #[test]
    fn urls_of_other_schemes_are_refused_not_read_as_paths() {
        for url in [
            "https://example.com/ds",
            "file:///tmp/ds",
            "hf://datasets/x",
        ] {
            let err = DatasetLocation::from_path(Path::new(url))
                .unwrap_err()
                .to_string();
            assert!(err.contains("URLs are not a supported store"), "{err}");
        }
        let err = DatasetLocation::from_path(Path::new("https://user:pw@h/ds"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
        // Paths that merely contain "://" further in, or start with no scheme, stay paths.
        for path in ["./https://x", "out/ds", "1a://x"] {
            assert!(
                DatasetLocation::from_path(Path::new(path)).is_ok(),
                "{path}"
            );
        }
    }

    #[test]
    fn local_files() {
        let dir = tempfile::tempdir().unwrap();
        let at = DatasetLocation::Local(dir.path().to_path_buf());
        assert_eq!(at.size("a.txt").unwrap(), None);
        assert_eq!(at.read("a.txt").unwrap(), None);
        std::fs::create_dir_all(dir.path().join("data/x")).unwrap();
        at.write("data/x/a.txt", b"abc").unwrap();
        at.write("b.txt", b"de").unwrap();
        assert_eq!(at.size("data/x/a.txt").unwrap(), Some(3));
        assert_eq!(at.read("b.txt").unwrap().unwrap().as_ref(), b"de");
        assert_eq!(at.list("").unwrap(), ["b.txt", "data/x/a.txt"]);
        assert_eq!(at.list("data").unwrap(), ["data/x/a.txt"]);
        assert!(at.list("nope").unwrap().is_empty());
    }
}
