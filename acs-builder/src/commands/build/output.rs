//! What the output folder holds before a build starts, checked without touching it (an
//! object-store output gets one probe object in its staging area, deleted at once).

use std::path::{Path, PathBuf};

use acs_schema::{DatasetLocation, DatasetManifest, WorkerSlice, MANIFEST_FILE};

use super::changes::{changed_keys, describe};
use crate::error::AcsError;
use crate::store::journal::JOURNAL_DIR;
use crate::store::publish::{default_work_dir, Publisher, STAGING_DIR};
use crate::store::REJECTS_FILE;

/// The build configuration a run records (see `BuildInputs`), and its sha256.
#[derive(Debug, Clone, Copy)]
pub struct BuildConfig<'a> {
    /// The configuration.
    pub value: &'a serde_json::Value,
    /// Its sha256.
    pub sha256: &'a str,
}

/// Where a build writes: the local folder it works in (the output itself, or for an
/// object-store output the local folder of its journal), and the publisher of a remote output.
#[derive(Debug, Clone)]
pub struct OutputTarget {
    /// The local folder the sink writes (journal, spooled batches, shards being written).
    pub work: PathBuf,
    /// The object-store output, if `--out` is a URL.
    pub remote: Option<Publisher>,
}

impl OutputTarget {
    /// The target of `--out` (a folder or an object-store URL) and `--journal`.
    pub fn of(out: &Path, journal: Option<&Path>) -> Result<Self, AcsError> {
        match DatasetLocation::from_path(out)? {
            DatasetLocation::Local(path) => {
                if journal.is_some() {
                    return Err(AcsError::input(
                        "--journal: only for an object-store --out (s3://, gs://, az://); a \
                         local output keeps its journal inside",
                    ));
                }
                Ok(Self {
                    work: path,
                    remote: None,
                })
            }
            DatasetLocation::Remote(dir) => Ok(Self {
                work: journal.map_or_else(|| default_work_dir(dir.url()), Path::to_path_buf),
                remote: Some(Publisher::new(dir)),
            }),
        }
    }
}

/// Refuses outputs that cannot be written or hold something else; touches nothing (but a
/// probe object of a remote output, deleted at once).
pub fn check_output(
    target: &OutputTarget,
    config: &BuildConfig,
    worker: Option<WorkerSlice>,
) -> Result<OutputState, AcsError> {
    let Some(publisher) = &target.remote else {
        return check_output_folder(&target.work, config, worker);
    };
    let dir = publisher.dir();
    // Listing proves that the bucket exists and the credentials are good.
    let objects = dir.list()?;
    if objects.iter().any(|(name, _)| name == MANIFEST_FILE) {
        let existing = DatasetManifest::load_from(&DatasetLocation::Remote(dir.clone()))?;
        check_same_build(Path::new(dir.url()), &existing, config, worker, true)?;
        if !existing.complete {
            return Err(AcsError::input(format!(
                "{dir}: holds an unfinished dataset that was not written by `acs build` into \
                 object storage; choose another prefix"
            )));
        }
        return Ok(OutputState::Finished(existing));
    }
    let staging = format!("{STAGING_DIR}/");
    // The local journal of this build, unfinished: a run killed while it published (shards
    // copied to their final names, no manifest yet) left those objects; the rerun finishes it.
    let local = check_output_folder(&target.work, config, worker)?;
    let resuming = !matches!(local, OutputState::Empty);
    let foreign: Vec<&String> = objects
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with(&staging))
        .filter(|name| !(resuming && is_published_name(name)))
        .collect();
    if let Some(first) = foreign.first() {
        return Err(AcsError::input(format!(
            "{dir}: output is not empty (it holds {first}{}); choose a new prefix",
            match foreign.len() {
                1 => String::new(),
                n => format!(" and {} more objects", n - 1),
            }
        )));
    }
    let probe = format!("{STAGING_DIR}/.acs-probe-{}", std::process::id());
    publisher.publish(&probe, b"")?;
    dir.delete(&probe)?;
    match local {
        // The local copy of a finished manifest whose upload did not happen: finish again.
        OutputState::Finished(mut existing) => {
            existing.complete = false;
            Ok(OutputState::Unfinished(existing))
        }
        state => Ok(state),
    }
}

/// The names a build's publish step writes besides the manifest: the final shards, the card
/// and the rejects.
fn is_published_name(name: &str) -> bool {
    let shard = name
        .strip_prefix("data/")
        .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".parquet"));
    shard || name == "README.md" || name == crate::store::REJECTS_FILE
}

/// Refuses a manifest of another build or another worker slice in `out`.
fn check_same_build(
    out: &Path,
    existing: &DatasetManifest,
    config: &BuildConfig,
    worker: Option<WorkerSlice>,
    remote: bool,
) -> Result<(), AcsError> {
    if existing.build_config_sha256 != config.sha256 {
        let changes = describe(&changed_keys(&existing.build_config, config.value));
        let what = if existing.complete {
            "a finished build"
        } else {
            "an unfinished build"
        };
        let advice = match (existing.complete, remote) {
            (true, _) => "choose another folder (a finished dataset is never removed)",
            (false, false) => {
                "rerun with --restart to discard it and start again, or choose another folder"
            }
            (false, true) => "choose another prefix",
        };
        return Err(AcsError::input(format!(
            "{}: holds {what} of another manifest (changed: {changes}); {advice}",
            out.display()
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
    Ok(())
}

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
    config: &BuildConfig,
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
    check_same_build(out, &existing, config, worker, false)?;
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
