//! Builds whose output is in object storage (`acs build --out s3://bucket/prefix`).
//!
//! The build runs in a local work folder exactly as a local build does (journal, spooled
//! batches, the manifest of finished shards, the card); the bucket only ever receives complete
//! objects:
//!
//! - each finished shard is uploaded (multipart above the part size; an upload becomes visible
//!   only when it completes) to `PREFIX/.acs-staging/data/...`, journaled, and its local copy
//!   deleted;
//! - at the end the staged shards are copied on the server to their final
//!   `data/{split}-{i:05d}-of-{n:05d}.parquet` names, then `rejects.jsonl`, `README.md` and,
//!   last, `acs-manifest.json` are written, and the staging objects are deleted.
//!
//! A reader that starts from the manifest never sees a partial dataset, and nothing under
//! `data/` is ever partial. The work folder is `--journal DIR`, or by default
//! `$ACS_HOME/journals/<hash of the URL>`; a rerun of the same build resumes from it.

use std::path::{Path, PathBuf};

use acs_schema::RemoteDir;

use crate::error::AcsError;
use crate::store::fault;

/// Where a remote build keeps its finished shards until the final names are known.
pub const STAGING_DIR: &str = ".acs-staging";

/// The files of a remote build's work folder, removed when the build is finished.
const WORK_FILES: [&str; 3] = [
    acs_schema::MANIFEST_FILE,
    "README.md",
    crate::store::REJECTS_FILE,
];

/// Publishes a build into an object-store folder.
#[derive(Debug, Clone)]
pub struct Publisher {
    dir: RemoteDir,
}

impl Publisher {
    /// A publisher into `dir`.
    pub fn new(dir: RemoteDir) -> Self {
        Self { dir }
    }

    /// The output folder.
    pub fn dir(&self) -> &RemoteDir {
        &self.dir
    }

    fn staged(relative: &str) -> String {
        format!("{STAGING_DIR}/{relative}")
    }

    /// Uploads the finished shard `work/relative` to the staging area (complete, or not at
    /// all). Fault point `upload-part` follows each part of a multipart upload.
    pub fn upload_shard(&self, work: &Path, relative: &str) -> Result<(), AcsError> {
        let mut on_part = |_| fault::point("upload-part");
        self.dir
            .upload_file(&work.join(relative), &Self::staged(relative), &mut on_part)?;
        Ok(())
    }

    /// The size of the staged shard `relative`, if it is there.
    pub fn staged_size(&self, relative: &str) -> Result<Option<u64>, AcsError> {
        Ok(self.dir.size(&Self::staged(relative))?)
    }

    /// Copies the staged shard `from` to its final name `to` (on the server). When the staged
    /// object is gone, `to` must already be there.
    pub fn copy_staged(&self, from: &str, to: &str) -> Result<(), AcsError> {
        match self.dir.copy_to(&Self::staged(from), &self.dir, to) {
            Ok(()) => Ok(()),
            Err(err) => match self.dir.size(to)? {
                Some(_) if self.staged_size(from)?.is_none() => Ok(()),
                _ => Err(err.into()),
            },
        }
    }

    /// Writes `relative` in one request.
    pub fn publish(&self, relative: &str, bytes: &[u8]) -> Result<(), AcsError> {
        Ok(self.dir.put(relative, bytes.to_vec())?)
    }

    /// Writes the local file `work/name` as `name`, if it exists.
    pub fn publish_file(&self, work: &Path, name: &str) -> Result<(), AcsError> {
        let path = work.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => self.publish(name, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AcsError::io(&path, e)),
        }
    }

    /// Deletes the staging area (after the manifest is written).
    pub fn clear_staging(&self) -> Result<(), AcsError> {
        Ok(self.dir.child(STAGING_DIR).delete_all()?)
    }
}

/// The default work folder of a build into `url`: `$ACS_HOME/journals/<first 16 hex digits of
/// sha256(url)>`.
pub fn default_work_dir(url: &str) -> PathBuf {
    let digest = acs_schema::sha256_bytes(url.as_bytes());
    crate::runtime::model::tiny::acs_home()
        .join("journals")
        .join(&digest[..16])
}

/// Removes what a remote build kept in its work folder (journal, manifest, card, rejects,
/// the `data/` folder) and the folder itself when nothing else is in it.
pub fn remove_work_dir(work: &Path) -> Result<(), AcsError> {
    crate::store::journal::Journal::remove(work)?;
    for name in WORK_FILES {
        let path = work.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AcsError::io(&path, e)),
        }
    }
    crate::store::sink::remove_temp_files(&work.join("data"));
    crate::store::sink::remove_temp_files(work);
    let _ = std::fs::remove_dir(work.join("data"));
    let _ = std::fs::remove_dir(work);
    Ok(())
}
