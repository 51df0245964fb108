//! The folder of one repository in the hub cache, laid out as `huggingface_hub` lays it out:
//!
//! ```text
//! models--org--name/
//!   blobs/<etag>                  file contents, named by their hash
//!   blobs/<etag>.incomplete       a download in progress (resumed from its length)
//!   snapshots/<commit>/<path>     relative symlink to ../../blobs/<etag> (a copy where
//!                                 symlinks are not possible)
//!   refs/<revision>               the commit a branch or tag named when last fetched
//! ```

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::runtime::error::{RuntimeError, Setting};
use crate::runtime::hub::cache::{is_commit_hash, repo_folder_of, valid_revision, RepoKind};

/// One repository's folder in the hub cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    dir: PathBuf,
}

impl RepoCache {
    /// The folder of model `repo` inside the hub cache `cache` (not created yet).
    pub fn new(cache: &Path, repo: &str) -> Self {
        Self::of(cache, RepoKind::Model, repo)
    }

    /// The folder of a repository of `kind`.
    pub fn of(cache: &Path, kind: RepoKind, repo: &str) -> Self {
        Self {
            dir: repo_folder_of(cache, kind, repo),
        }
    }

    /// `models--org--name`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete, verified contents of the file whose ETag is `etag`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// Where the download of `etag` accumulates until it is complete and verified.
    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// The snapshot folder of a commit.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// Where `file` of `commit` appears.
    pub fn pointer_path(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot_dir(commit).join(file)
    }

    /// Whether `file` of `commit` is already in the snapshot (a link to an existing blob).
    pub fn has_file(&self, commit: &str, file: &str) -> bool {
        self.pointer_path(commit, file).is_file()
    }

    /// Makes `file` of `commit` point at the blob `etag` (which must exist): a relative symlink,
    /// or a copy where the file system refuses symlinks. Replaces whatever was there.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), RuntimeError> {
        if !is_plain_relative(file) {
            return Err(RuntimeError::internal(format!(
                "unsafe snapshot path `{file}`"
            )));
        }
        let pointer = self.pointer_path(commit, file);
        let parent = pointer.parent().ok_or_else(|| {
            RuntimeError::internal(format!("snapshot path `{file}` has no parent"))
        })?;
        std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        let target = relative_blob_target(file, etag);
        if std::fs::read_link(&pointer).is_ok_and(|t| t == target) && pointer.is_file() {
            return Ok(());
        }
        let name = pointer
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if make_symlink(&target, &tmp).is_err() {
            let blob = self.blob_path(etag);
            std::fs::copy(&blob, &tmp).map_err(|e| RuntimeError::io(&blob, e))?;
        }
        std::fs::rename(&tmp, &pointer).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RuntimeError::io(&pointer, e)
        })
    }

    /// Records that `revision` (a branch or tag) names `commit`; nothing for a commit hash.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), RuntimeError> {
        if is_commit_hash(revision) {
            return Ok(());
        }
        if !valid_revision(revision) {
            return Err(RuntimeError::setting(
                Setting::Revision,
                format!("`{revision}` is not a revision"),
            ));
        }
        let path = self.dir.join("refs").join(revision);
        if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        write_replacing(&path, commit.as_bytes())
    }
}

/// A relative path without `..`, `.`, or a root.
fn is_plain_relative(file: &str) -> bool {
    !file.is_empty()
        && Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The symlink target from `snapshots/<commit>/<file>` to `blobs/<etag>`, e.g.
/// `../../blobs/<etag>` for a file at the snapshot's root, `../../../blobs/<etag>` one level
/// down (what `os.path.relpath` gives `huggingface_hub`).
pub fn relative_blob_target(file: &str, etag: &str) -> PathBuf {
    let depth = Path::new(file).components().count().saturating_sub(1) + 2;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("blobs").join(etag)
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn make_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn make_symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Writes `bytes` to `path` through a temporary sibling renamed over it, so that a reader never
/// sees a partial file.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| RuntimeError::io(dir, e))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| RuntimeError::io(path, e))?;
    file.persist(path)
        .map(drop)
        .map_err(|e| RuntimeError::io(path, e.error))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn targets_are_relative_to_the_link() {
        assert_eq!(
            relative_blob_target("model_index.json", "ab"),
            Path::new("../../blobs/ab")
        );
        assert_eq!(
            relative_blob_target("unet/config.json", "ab"),
            Path::new("../../../blobs/ab")
        );
    }

    #[test]
    fn links_resolve_and_refs_are_written() {
        let cache = tempfile::tempdir().unwrap();
        let repo = RepoCache::new(cache.path(), "org/name");
        assert_eq!(repo.dir(), cache.path().join("models--org--name"));
        std::fs::create_dir_all(repo.blob_path("e1").parent().unwrap()).unwrap();
        std::fs::write(repo.blob_path("e1"), b"one").unwrap();
        std::fs::write(repo.blob_path("e2"), b"two").unwrap();
        assert!(!repo.has_file(COMMIT, "unet/config.json"));
        repo.link(COMMIT, "unet/config.json", "e1").unwrap();
        assert!(repo.has_file(COMMIT, "unet/config.json"));
        let pointer = repo.pointer_path(COMMIT, "unet/config.json");
        assert_eq!(std::fs::read(&pointer).unwrap(), b"one");
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&pointer).unwrap(),
            Path::new("../../../blobs/e1")
        );
        // Relinking replaces the pointer and leaves no temporary file.
        repo.link(COMMIT, "unet/config.json", "e2").unwrap();
        assert_eq!(std::fs::read(&pointer).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(pointer.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"]);
        assert!(repo.link(COMMIT, "../escape", "e1").is_err());

        repo.write_ref("main", COMMIT).unwrap();
        repo.write_ref("refs/pr/1", COMMIT).unwrap();
        repo.write_ref(COMMIT, COMMIT).unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.dir().join("refs/main")).unwrap(),
            COMMIT
        );
        assert!(repo.dir().join("refs/refs/pr/1").is_file());
        assert!(!repo.dir().join("refs").join(COMMIT).exists());
        assert_eq!(
            crate::runtime::hub::cache::resolve_snapshot(cache.path(), "org/name", "main").unwrap(),
            repo.snapshot_dir(COMMIT)
        );
    }
}
