//! The build journal: an append-only log in `DIR/.acs-journal/` of what a build has made
//! durable, so that a killed build resumes where it stopped.
//!
//! Every rendered batch is spooled to `batch-NNNNNN.parquet` (written atomically) and then
//! logged; every shard is logged after its file is complete and before the manifest lists it;
//! before the final renames the whole rename plan is logged, so a kill in the middle of them
//! is finished on the next run. Each line is fsynced; a torn last line (a kill while appending)
//! is ignored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AcsError;

/// The journal's folder inside the output folder.
pub const JOURNAL_DIR: &str = ".acs-journal";
const JOURNAL_FILE: &str = "journal.jsonl";

/// One durable step of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    /// A rendered batch was spooled to `file` (relative to the journal folder).
    Batch {
        /// Batch number, increasing over the build and its resumptions.
        index: u64,
        /// The spool file.
        file: String,
        /// The pairs it holds, in order.
        pair_ids: Vec<String>,
    },
    /// A shard file is complete (its manifest entry may or may not have been saved).
    Shard {
        /// Path relative to the output folder.
        path: String,
        /// The pairs it holds.
        pair_ids: Vec<String>,
        /// How many of them are valid.
        valid_rows: u64,
    },
    /// A finished shard was uploaded to the staging area of a remote output (and its local
    /// copy may be gone).
    Uploaded {
        /// Path relative to the output folder.
        path: String,
    },
    /// The final renames (from, to), logged before the first one.
    Finishing {
        /// Provisional -> final shard paths, relative to the output folder.
        renames: Vec<(String, String)>,
    },
}

/// The open journal of one output folder.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
}

impl Journal {
    /// The journal folder of an output folder.
    pub fn dir_of(root: &Path) -> PathBuf {
        root.join(JOURNAL_DIR)
    }

    /// Opens (creating if needed) the journal of `root` for appending.
    pub fn open(root: &Path) -> Result<Self, AcsError> {
        let dir = Self::dir_of(root);
        std::fs::create_dir_all(&dir).map_err(|e| AcsError::io(&dir, e))?;
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AcsError::io(&path, e))?;
        Ok(Self { dir, file })
    }

    /// The journal folder (where spool files live).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one entry and makes it durable.
    pub fn append(&mut self, entry: &Entry) -> Result<(), AcsError> {
        let path = self.dir.join(JOURNAL_FILE);
        crate::store::fault::check_write(&path)?;
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| AcsError::io(&path, e))
    }

    /// The entries recorded under `root`, oldest first; none when there is no journal. A line
    /// that does not parse ends the log (it can only be the torn last one).
    pub fn read(root: &Path) -> Result<Vec<Entry>, AcsError> {
        let path = Self::dir_of(root).join(JOURNAL_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AcsError::io(&path, e)),
        };
        let mut entries = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(entry) => entries.push(entry),
                Err(_) => break,
            }
        }
        Ok(entries)
    }

    /// How many rendered pairs the journal under `root` has spooled (0 when there is none).
    pub fn rendered_pairs(root: &Path) -> Result<usize, AcsError> {
        let entries = Self::read(root)?;
        Ok(entries
            .iter()
            .map(|e| match e {
                Entry::Batch { pair_ids, .. } => pair_ids.len(),
                _ => 0,
            })
            .sum())
    }

    /// Removes the journal folder of a finished build.
    pub fn remove(root: &Path) -> Result<(), AcsError> {
        let dir = Self::dir_of(root);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AcsError::io(&dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_line_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let entries = vec![
            Entry::Batch {
                index: 0,
                file: "batch-000000.parquet".into(),
                pair_ids: vec!["a".into(), "b".into()],
            },
            Entry::Shard {
                path: "data/train-00000.parquet".into(),
                pair_ids: vec!["a".into()],
                valid_rows: 1,
            },
            Entry::Finishing {
                renames: vec![("x".into(), "y".into())],
            },
        ];
        for entry in &entries {
            journal.append(entry).unwrap();
        }
        drop(journal);
        let path = Journal::dir_of(dir.path()).join(JOURNAL_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"event\":\"batch\",\"ind").unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), entries);
        Journal::remove(dir.path()).unwrap();
        assert!(Journal::read(dir.path()).unwrap().is_empty());
    }
}
