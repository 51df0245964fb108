//! Atomic file replacement: write a temporary sibling, fsync it, rename it over the target.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::SchemaError;

/// The temporary sibling used while `path` is being written: `.{file name}.tmp` in the same
/// directory (so the final rename never crosses file systems).
pub fn temp_sibling(path: &Path) -> Result<PathBuf, SchemaError> {
    let name = path
        .file_name()
        .ok_or_else(|| SchemaError::invalid(path, "not a file path (no file name)"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    Ok(path.with_file_name(tmp_name))
}

/// Writes `bytes` to `path` atomically: readers see either the old file or the complete new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SchemaError> {
    write_atomic_with(path, |file, tmp| {
        file.write_all(bytes).map_err(|e| SchemaError::io(tmp, e))
    })
}

/// Creates the temporary sibling of `path`, lets `fill` write it, then fsyncs it, renames it to
/// `path` and fsyncs the directory. On any error the temporary file is removed and `path` is
/// left untouched. `fill` gets the open file and the temporary path (for error messages).
pub fn write_atomic_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut File, &Path) -> Result<T, SchemaError>,
) -> Result<T, SchemaError> {
    let tmp = temp_sibling(path)?;
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| SchemaError::io(&tmp, e))?;
        let value = fill(&mut file, &tmp)?;
        file.sync_all().map_err(|e| SchemaError::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| SchemaError::io(path, e))?;
        Ok(value)
    })();
    match result {
        Ok(value) => {
            sync_parent(path);
            Ok(value)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Best-effort fsync of the directory holding `path`, so that the rename itself is durable.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        assert_eq!(temp_sibling(&path).unwrap(), dir.path().join(".a.json.tmp"));
    }

    #[test]
    fn failure_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |f, tmp| {
            f.write_all(b"partial")
                .map_err(|e| SchemaError::io(tmp, e))?;
            Err::<(), _>(SchemaError::invalid(tmp, "boom"))
        })
        .unwrap_err();
        assert!(err.to_string().ends_with("boom"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(!temp_sibling(&path).unwrap().exists());
        let missing_dir = dir.path().join("nope").join("x");
        let err = write_atomic(&missing_dir, b"x").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
