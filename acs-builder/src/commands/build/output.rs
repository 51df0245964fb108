//! What the output folder holds before a build starts, checked without touching it.

use std::path::Path;

use acs_schema::{DatasetManifest, WorkerSlice, MANIFEST_FILE};

use crate::error::AcsError;
use crate::store::journal::JOURNAL_DIR;

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
        if !only_early_traces(out)? {
            return Err(AcsError::input(format!(
                "{}: output folder is not empty",
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

/// Whether a folder holds only what a build killed before its first manifest leaves.
fn only_early_traces(out: &Path) -> Result<bool, AcsError> {
    for entry in std::fs::read_dir(out).map_err(|e| AcsError::io(out, e))? {
        let entry = entry.map_err(|e| AcsError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let allowed = match name.as_str() {
            JOURNAL_DIR => true,
            "data" => std::fs::read_dir(entry.path())
                .map_err(|e| AcsError::io(&entry.path(), e))?
                .flatten()
                .all(|e| e.file_name().to_string_lossy().ends_with(".tmp")),
            _ => name.starts_with('.') && name.ends_with(".tmp"),
        };
        if !allowed {
            return Ok(false);
        }
    }
    Ok(true)
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
