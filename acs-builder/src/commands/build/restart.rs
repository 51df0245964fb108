//! `acs build --restart`: discards the unfinished build in a local output folder (its
//! manifest, shards, spooled batches, journal and rejects), after naming what goes. A finished
//! dataset is never removed, and nothing that is not a trace of a build is touched.

use std::path::{Path, PathBuf};

use acs_schema::{DatasetManifest, MANIFEST_FILE};

use super::output::OutputTarget;
use crate::error::AcsError;
use crate::store::journal::{Journal, JOURNAL_DIR};
use crate::store::REJECTS_FILE;

/// Removes the unfinished build in `target`'s folder, if any; says on stderr what it removes.
pub fn discard_unfinished(target: &OutputTarget) -> Result<(), AcsError> {
    if target.remote.is_some() {
        return Err(AcsError::input(
            "--restart: only for a local --out (an object-store build is resumed from its \
             journal; to start over, use a new prefix and a new --journal folder)",
        ));
    }
    let out = &target.work;
    let manifest_path = out.join(MANIFEST_FILE);
    let mut doomed: Vec<PathBuf> = Vec::new();
    let mut described: Vec<String> = Vec::new();
    if manifest_path.is_file() {
        let existing = DatasetManifest::load(out)?;
        if existing.complete {
            return Err(AcsError::input(format!(
                "{}: holds a finished dataset; --restart discards only an unfinished build (a \
                 finished dataset is never removed): choose another folder",
                out.display()
            )));
        }
        described.push(format!(
            "{MANIFEST_FILE} and its {} shards ({} rows)",
            existing.shards.len(),
            existing.total_rows()
        ));
        doomed.extend(existing.shards.iter().map(|s| out.join(&s.path)));
        doomed.push(manifest_path);
    }
    let temporary = temporary_shards(&out.join("data"))?;
    if !temporary.is_empty() {
        described.push(format!("{} unfinished shard files", temporary.len()));
        doomed.extend(temporary);
    }
    let journal = out.join(JOURNAL_DIR);
    if journal.is_dir() {
        let batches = Journal::rendered_pairs(out)?;
        described.push(format!("the journal ({batches} rendered pairs)"));
        doomed.push(journal);
    }
    for name in [REJECTS_FILE, "README.md"] {
        if !doomed.is_empty() && out.join(name).is_file() {
            described.push(name.to_owned());
            doomed.push(out.join(name));
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "--restart: removing the unfinished build in {}: {}",
        out.display(),
        described.join(", ")
    );
    for path in doomed {
        remove(&path)?;
    }
    Ok(())
}

/// The `.tmp` files of `data/` (shards a killed build was writing).
fn temporary_shards(data: &Path) -> Result<Vec<PathBuf>, AcsError> {
    if !data.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data).map_err(|e| AcsError::io(data, e))? {
        let entry = entry.map_err(|e| AcsError::io(data, e))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn remove(path: &Path) -> Result<(), AcsError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AcsError::io(path, e)),
        _ => Ok(()),
    }
}
