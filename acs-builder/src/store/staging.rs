//! New output folders that appear whole: built in a hidden sibling and renamed into place only
//! once complete (`acs validate --drop-invalid`, `acs merge`).

use std::path::{Path, PathBuf};

use crate::error::AcsError;

/// Refuses an `--out` that exists and is not an empty folder.
pub fn check_new_folder(out: &Path) -> Result<(), AcsError> {
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| AcsError::io(out, e))?
                .next()
                .is_none();
        if !empty {
            return Err(AcsError::input(format!(
                "{}: --out exists and is not an empty folder",
                out.display()
            )));
        }
    }
    Ok(())
}

/// A hidden sibling of `out` to build in.
fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    out.with_file_name(format!(".{name}.acs-partial-{}", std::process::id()))
}

/// Lets `fill` write the folder's contents into a staging sibling, then renames it to `out`
/// (which must be absent or empty); on failure the staging folder is removed.
pub fn write_new_folder<T>(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<T, AcsError>,
) -> Result<T, AcsError> {
    let staging = staging_dir(out);
    match fill(&staging) {
        Ok(value) => {
            if out.exists() {
                std::fs::remove_dir(out).map_err(|e| AcsError::io(out, e))?;
            }
            std::fs::rename(&staging, out).map_err(|e| AcsError::io(out, e))?;
            Ok(value)
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(err)
        }
    }
}
