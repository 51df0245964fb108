//! File-level checks of one listed shard: its path and split name, size, footer and sha256.
//! The shard is read once: its footer first, then its row groups (checked by the caller), and
//! its sha256 comes out of the same reads.

use acs_schema::{DatasetLocation, ShardEntry, ShardReader};

use crate::error::without_path;

/// A listed shard opened for its rows, with the file-level error that waits for its hash
/// (a row count that differs from the manifest's is reported only if the bytes are intact).
pub struct OpenShard {
    /// The reader, positioned before the first row group.
    pub reader: ShardReader,
    /// An error to report once the sha256 matched.
    pub pending_error: Option<String>,
}

/// `entry.path: sha256 mismatch ...` when the file's hash differs from the manifest's.
pub fn sha_mismatch(entry: &ShardEntry, sha: &str) -> Option<String> {
    (sha != entry.sha256).then(|| {
        format!(
            "{}: sha256 mismatch (manifest {}, file {sha})",
            entry.path, entry.sha256
        )
    })
}

/// Checks the shard file of `entry` under `root` (path, split name, size, footer); each failure
/// becomes an error naming the shard. `None` when its rows cannot be read. A damaged file is
/// reported as a sha256 mismatch, as its hash is what the manifest vouches for.
pub fn open_shard_file(
    root: &DatasetLocation,
    entry: &ShardEntry,
    errors: &mut Vec<String>,
) -> Option<OpenShard> {
    let mut fail = |message: String| {
        errors.push(message);
        None
    };
    if let Err(why) = acs_schema::check_relative(&entry.path) {
        return fail(format!("{}: shard path {why}", entry.path));
    }
    if !acs_schema::is_split_name(&entry.split) {
        return fail(format!(
            "{}: split `{}` is not a valid split name (letters, digits, _)",
            entry.path, entry.split
        ));
    }
    let path = root.name_of(&entry.path);
    let size = match root.size(&entry.path) {
        Ok(Some(size)) => size,
        Ok(None) => {
            return fail(format!(
                "{}: listed in the manifest but missing",
                entry.path
            ))
        }
        Err(e) => {
            return fail(format!(
                "{}: {}",
                entry.path,
                without_path(&e.to_string(), &path)
            ))
        }
    };
    if size != entry.bytes {
        return fail(format!(
            "{}: {size} bytes, manifest says {}",
            entry.path, entry.bytes
        ));
    }
    // The hash of a file whose footer or schema is wrong decides which error is reported.
    let hashed = |root: &DatasetLocation| match root.sha256(&entry.path) {
        Ok(sha) => sha_mismatch(entry, &sha),
        Err(e) => Some(format!(
            "{}: {}",
            entry.path,
            without_path(&e.to_string(), &path)
        )),
    };
    let reader = match root.open_shard(&entry.path) {
        Ok(reader) => reader,
        Err(e) => {
            return fail(hashed(root).unwrap_or_else(|| {
                format!(
                    "{}: unreadable footer: {}",
                    entry.path,
                    without_path(&e.to_string(), &path)
                )
            }))
        }
    };
    match reader.footer() {
        Ok(footer)
            if footer.schema_version.as_deref() != Some("1") || !footer.arrow_schema_matches =>
        {
            fail(
                hashed(root)
                    .unwrap_or_else(|| format!("{}: not an acs schema v1 shard", entry.path)),
            )
        }
        Ok(footer) => Some(OpenShard {
            reader,
            // The rows can still be read and checked.
            pending_error: (footer.rows != entry.rows).then(|| {
                format!(
                    "{}: {} rows, manifest says {}",
                    entry.path, footer.rows, entry.rows
                )
            }),
        }),
        Err(e) => fail(hashed(root).unwrap_or_else(|| {
            format!(
                "{}: unreadable footer: {}",
                entry.path,
                without_path(&e.to_string(), &path)
            )
        })),
    }
}

/// Shard files under `data/` that the manifest does not list, as errors.
pub fn unlisted_shards(dir: &DatasetLocation, listed: &[String]) -> Vec<String> {
    let Ok(files) = dir.list("data") else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter(|p| p.ends_with(".parquet") && !listed.contains(p))
        .map(|p| format!("{p}: shard not listed in the manifest"))
        .collect()
}
