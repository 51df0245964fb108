//! File-level checks of one listed shard: its path and split name, size, sha256 and footer.

use std::path::Path;

use acs_schema::{read_shard_footer, ShardEntry};

use crate::error::without_path;

/// Checks the shard file of `entry` under `root`; each failure becomes an error naming the
/// shard. `false` when its rows cannot be read.
pub fn check_shard_file(root: &Path, entry: &ShardEntry, errors: &mut Vec<String>) -> bool {
    let mut fail = |message: String| {
        errors.push(message);
        false
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
    let path = root.join(&entry.path);
    let Ok(meta) = std::fs::metadata(&path) else {
        return fail(format!(
            "{}: listed in the manifest but missing",
            entry.path
        ));
    };
    if meta.len() != entry.bytes {
        return fail(format!(
            "{}: {} bytes, manifest says {}",
            entry.path,
            meta.len(),
            entry.bytes
        ));
    }
    match acs_schema::sha256_file(&path) {
        Ok(sha) if sha == entry.sha256 => {}
        Ok(sha) => {
            return fail(format!(
                "{}: sha256 mismatch (manifest {}, file {sha})",
                entry.path, entry.sha256
            ))
        }
        Err(e) => return fail(format!("{}: {e}", entry.path)),
    }
    match read_shard_footer(&path) {
        Ok(footer)
            if footer.schema_version.as_deref() != Some("1") || !footer.arrow_schema_matches =>
        {
            fail(format!("{}: not an acs schema v1 shard", entry.path))
        }
        Ok(footer) if footer.rows != entry.rows => {
            // The rows can still be read and checked.
            fail(format!(
                "{}: {} rows, manifest says {}",
                entry.path, footer.rows, entry.rows
            ));
            true
        }
        Ok(_) => true,
        Err(e) => fail(format!(
            "{}: unreadable footer: {}",
            entry.path,
            without_path(&e.to_string(), &path)
        )),
    }
}

/// Shard files under `data/` that the manifest does not list, as errors.
pub fn unlisted_shards(dir: &Path, listed: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("data")) else {
        return Vec::new();
    };
    let mut extra: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".parquet") && !listed.contains(p))
        .collect();
    extra.sort();
    extra
        .into_iter()
        .map(|p| format!("{p}: shard not listed in the manifest"))
        .collect()
}
