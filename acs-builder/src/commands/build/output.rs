//! What the output folder holds before a build starts, checked without touching it.

use std::path::Path;

use acs_schema::{DatasetManifest, WorkerSlice, MANIFEST_FILE};

use crate::error::AcsError;
use crate::store::journal::JOURNAL_DIR;
use crate::store::REJECTS_FILE;

/// What the output folder holds.
pub enum OutputState {
    /// Nothing (new, empty, or only the traces of a build killed before its manifest).
    Empty,
    /// This build, finished.
    Finished(DatasetManifest),
    /// This build, unfinished: resume it.
    Unfinished(DatasetManifest),
}

/// Refuses output folders that cannot be written or hold something else; touches nothing.
pub fn check_output_folder(
    out: &Path,
    config_sha256: &str,
    worker: Option<WorkerSlice>,
) -> Result<OutputState, AcsError> {
    if !out.exists() {
        probe_nearest_ancestor(out)?;
        return Ok(OutputState::Empty);
    }
    if !out.is_dir() {
        return Err(AcsError::input(format!(
            "{}: output exists and is not a folder",
            out.display()
        )));
    }
    if !out.join(MANIFEST_FILE).is_file() {
        if let Some(found) = other_content(out)? {
            return Err(AcsError::input(format!(
                "{}: output folder is not empty (it holds {found}) and is no acs build; choose a \
                 new folder (a folder holding an unfinished build of this manifest is resumed)",
                out.display()
            )));
        }
        probe_writable(out)?;
        return Ok(OutputState::Empty);
    }
    let existing = DatasetManifest::load(out)?;
    if existing.build_config_sha256 != config_sha256 {
        return Err(AcsError::input(format!(
            "{}: holds a build of a different manifest (build_config_sha256 {}, this manifest \
             {config_sha256}); choose another folder",
            out.display(),
            existing.build_config_sha256
        )));
    }
    if existing.worker != worker {
        let describe = |w: Option<WorkerSlice>| {
            w.map_or("the whole build".to_string(), |w| format!("worker {w}"))
        };
        return Err(AcsError::input(format!(
            "{}: holds {} of this manifest, not {}; choose another folder",
            out.display(),
            describe(existing.worker),
            describe(worker)
        )));
    }
    probe_writable(out)?;
    Ok(if existing.complete {
        OutputState::Finished(existing)
    } else {
        OutputState::Unfinished(existing)
    })
}

/// What a folder holds besides the traces of a build that ended before its first manifest
/// (the journal, temporary files, the rejects of a build with nothing to render), named for a
/// message (at most three names); `None` when nothing else.
fn other_content(out: &Path) -> Result<Option<String>, AcsError> {
    let mut others = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| AcsError::io(out, e))? {
        let entry = entry.map_err(|e| AcsError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let allowed = match name.as_str() {
            JOURNAL_DIR | REJECTS_FILE => true,
            "data" => std::fs::read_dir(entry.path())
                .map_err(|e| AcsError::io(&entry.path(), e))?
                .flatten()
                .all(|e| e.file_name().to_string_lossy().ends_with(".tmp")),
            _ => name.starts_with('.') && name.ends_with(".tmp"),
        };
        if !allowed {
            others.push(format!("`{name}`"));
        }
    }
    others.sort();
    Ok(match others.len() {
        0 => None,
        1..=3 => Some(others.join(", ")),
        n => Some(format!("{}, ... ({n} entries)", others[..3].join(", "))),
    })
}

/// A folder that does not exist yet: its nearest existing ancestor must be writable.
fn probe_nearest_ancestor(out: &Path) -> Result<(), AcsError> {
    let mut ancestor = out.parent();
    while let Some(dir) = ancestor {
        if dir.as_os_str().is_empty() {
            return probe_writable(Path::new("."));
        }
        if dir.exists() {
            return probe_writable(dir);
        }
        ancestor = dir.parent();
    }
    Ok(())
}

fn probe_writable(dir: &Path) -> Result<(), AcsError> {
    tempfile::Builder::new()
        .prefix(".acs-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            AcsError::input(format!(
                "{}: output folder is not writable: {e}",
                dir.display()
            ))
        })
}
