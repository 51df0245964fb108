//! The dataset manifest `DIR/acs-manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::write_atomic;
use crate::error::SchemaError;
use crate::location::DatasetLocation;
use crate::{MANIFEST_FILE, SCHEMA_VERSION};

/// The dataset manifest `DIR/acs-manifest.json`: what was built, from which config and model,
/// and which shards hold the rows.
///
/// Saved as pretty JSON with a fixed key order (struct fields in declaration order, object keys
/// of `build_config` sorted), a trailing newline and no timestamps, so that identical builds give
/// identical manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// Schema version of the shards ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Version of acs that built the dataset.
    pub acs_version: String,
    /// The parsed build manifest, as JSON.
    pub build_config: Value,
    /// SHA-256 (lowercase hex) of the build manifest file.
    pub build_config_sha256: String,
    /// The diffusion model used.
    pub model: ModelInfo,
    /// The code paths that rendered the shards' rows (`cpu-avx512`, `cpu-avx2`, `cpu-generic`,
    /// `cuda-sm<NN> <name>`), sorted: the union of the shards' [`ShardEntry::kernel_paths`].
    /// Re-rendering a row on its own path gives the same bits. Empty (and absent from the
    /// file) for datasets written before acs recorded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_paths: Vec<String>,
    /// `false` while a build is in progress (or was interrupted), `true` once it finished.
    pub complete: bool,
    /// The shards, in dataset order.
    pub shards: Vec<ShardEntry>,
    /// The slice of the build this folder holds when it was built by one of several workers
    /// (`acs build --worker i/n`); absent for a whole build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSlice>,
}

/// Worker `index` of `count`: the pairs whose id maps to `index` (see [`WorkerSlice::owns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSlice {
    /// 0-based worker number.
    pub index: u32,
    /// Number of workers.
    pub count: u32,
}

impl WorkerSlice {
    /// Whether this worker renders the pair: the first 64 bits of the (hex) pair id modulo
    /// `count` equal `index`. Pair ids are uniform hashes, so slices are balanced.
    pub fn owns(&self, pair_id: &str) -> bool {
        let prefix = pair_id.get(..16).unwrap_or(pair_id);
        let value = u64::from_str_radix(prefix, 16).unwrap_or_else(|_| {
            // Not hex (never for ids acs makes): fall back to a stable byte hash.
            pair_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            })
        });
        value % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

impl std::fmt::Display for WorkerSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The model a dataset was rendered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Hub id or local name of the model.
    pub id: String,
    /// SHA-256 fingerprint of the weights.
    pub sha256: String,
}

/// One shard file of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// Path relative to the dataset directory, e.g. `data/train-00000-of-00001.parquet`.
    pub path: String,
    /// The split all rows of the shard belong to.
    pub split: String,
    /// Number of rows.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The code paths that rendered the shard's rows, sorted (more than one when a build was
    /// resumed on another machine); empty for shards written before acs recorded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_paths: Vec<String>,
    /// Worker outputs only: each row's position in the whole build's render plan, in row
    /// order, so that `acs merge` writes the rows in the order (and so the shards) of a
    /// one-process build. Empty in every other dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan_positions: Vec<u64>,
}

impl DatasetManifest {
    /// Sets [`DatasetManifest::kernel_paths`] to the union of the shards' paths.
    pub fn collect_kernel_paths(&mut self) {
        self.kernel_paths = self
            .shards
            .iter()
            .flat_map(|shard| shard.kernel_paths.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }

    /// The manifest file of dataset directory `dir`: `dir/acs-manifest.json`.
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Loads `dir/acs-manifest.json`.
    ///
    /// Errors: missing or unreadable file, invalid JSON or unknown/missing keys (with line and
    /// column), and a `schema_version` other than [`SCHEMA_VERSION`] ("schema_version 2 is not
    /// supported by this acs (supports 1)"), which is checked before anything else.
    ///
    /// `dir` may be an object-store URL (`s3://bucket/ds`, see [`DatasetLocation`]).
    pub fn load(dir: &Path) -> Result<Self, SchemaError> {
        if DatasetLocation::is_url(dir) {
            return Self::load_from(&DatasetLocation::from_path(dir)?);
        }
        let path = Self::file_path(dir);
        if dir.is_dir() && !path.exists() {
            return Err(SchemaError::invalid(
                dir,
                format!("not an acs dataset (no {})", crate::MANIFEST_FILE),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::io(&path, e))?;
        Self::from_json(&text, &path)
    }

    /// Loads the manifest of the dataset at `location` (local or remote); a missing manifest is
    /// an error naming it.
    pub fn load_from(location: &DatasetLocation) -> Result<Self, SchemaError> {
        let Some(dir) = location.as_remote() else {
            return Self::load(location.as_local().unwrap_or(Path::new(".")));
        };
        let url = dir.url_of(MANIFEST_FILE);
        let bytes = dir.get(MANIFEST_FILE)?.ok_or_else(|| SchemaError::Remote {
            url: url.clone(),
            detail: "not found (no dataset here)".into(),
        })?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| SchemaError::Remote {
            url: url.clone(),
            detail: "not UTF-8 text".into(),
        })?;
        Self::from_json(&text, Path::new(&url))
    }

    /// Parses manifest JSON; `path` only serves error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, SchemaError> {
        let value: Value = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
        if let Some(found) = value.get("schema_version").and_then(Value::as_u64) {
            if found != u64::from(SCHEMA_VERSION) {
                return Err(SchemaError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        serde_json::from_str(text).map_err(|e| json_error(path, &e))
    }

    /// The manifest as pretty JSON with a trailing newline (the exact bytes [`Self::save`]
    /// writes).
    pub fn to_json(&self) -> String {
        let mut canonical = self.clone();
        canonical.build_config = canonical_json(&self.build_config);
        // Serializing plain structs, strings, integers and a `Value` cannot fail.
        let mut text = serde_json::to_string_pretty(&canonical).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes `dir/acs-manifest.json` atomically (temporary sibling, fsync, rename).
    ///
    /// `dir` may be an object-store URL: the manifest is then written in one request.
    pub fn save(&self, dir: &Path) -> Result<(), SchemaError> {
        if DatasetLocation::is_url(dir) {
            return DatasetLocation::from_path(dir)?
                .write(MANIFEST_FILE, self.to_json().as_bytes());
        }
        write_atomic(&Self::file_path(dir), self.to_json().as_bytes())
    }

    /// Total number of rows over all shards.
    pub fn total_rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Number of rows per split (splits without shards are absent).
    pub fn rows_per_split(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            *out.entry(shard.split.clone()).or_insert(0) += shard.rows;
        }
        out
    }
}

fn json_error(path: &Path, e: &serde_json::Error) -> SchemaError {
    SchemaError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    }
}

/// `value` with the keys of every object in sorted order, whatever `serde_json`'s map type.
fn canonical_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn worker_slices_partition_pair_ids() {
        let ids: Vec<String> = (0..400u64)
            .map(|i| format!("{:016x}{:016x}", i.wrapping_mul(0x9e3779b97f4a7c15), i))
            .collect();
        let slices: Vec<WorkerSlice> = (0..4)
            .map(|index| WorkerSlice { index, count: 4 })
            .collect();
        for id in &ids {
            assert_eq!(slices.iter().filter(|s| s.owns(id)).count(), 1, "{id}");
        }
        for slice in &slices {
            let owned = ids.iter().filter(|id| slice.owns(id)).count();
            assert!((60..=140).contains(&owned), "{slice}: {owned}");
        }
        assert!(WorkerSlice { index: 0, count: 1 }.owns("not-hex"));
    }

    pub(crate) fn sample() -> DatasetManifest {
        DatasetManifest {
            schema_version: SCHEMA_VERSION,
            acs_version: "0.1.0".into(),
            build_config: serde_json::json!({
                "sampling": {"steps": 25, "scheduler": "ddim"},
                "alignment": {"mode": "shared-latent"},
            }),
            build_config_sha256: "00".repeat(32),
            model: ModelInfo {
                id: "acs/tiny".into(),
                sha256: "11".repeat(32),
            },
            kernel_paths: vec!["cpu-avx2".into()],
            complete: true,
            shards: vec![
                ShardEntry {
                    path: "data/train-00000-of-00001.parquet".into(),
                    split: "train".into(),
                    rows: 3,
                    bytes: 100,
                    sha256: "22".repeat(32),
                    kernel_paths: vec!["cpu-avx2".into()],
                    plan_positions: Vec::new(),
                },
                ShardEntry {
                    path: "data/test-00000-of-00001.parquet".into(),
                    split: "test".into(),
                    rows: 2,
                    bytes: 90,
                    sha256: "33".repeat(32),
                    kernel_paths: vec!["cpu-avx2".into()],
                    plan_positions: Vec::new(),
                },
            ],
            worker: None,
        }
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample();
        m.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(text.starts_with("{\n  \"schema_version\": 1,\n  \"acs_version\""));
        // build_config keys sorted: alignment before sampling, scheduler before steps.
        let a = text.find("\"alignment\"").unwrap();
        let s = text.find("\"sampling\"").unwrap();
        assert!(a < s);
        assert!(text.find("\"scheduler\"").unwrap() < text.find("\"steps\"").unwrap());
        assert_eq!(DatasetManifest::load(dir.path()).unwrap(), m);
        m.save(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap(),
            text
        );
        assert_eq!(m.total_rows(), 5);
        let per: Vec<(String, u64)> = m.rows_per_split().into_iter().collect();
        assert_eq!(per, [("test".to_string(), 2), ("train".to_string(), 3)]);
    }

    #[test]
    fn unsupported_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema_version"] = 2.into();
        v["future_field"] = true.into();
        std::fs::write(dir.path().join(MANIFEST_FILE), v.to_string()).unwrap();
        let err = DatasetManifest::load(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            SchemaError::UnsupportedVersion { found: 2, .. }
        ));
        assert!(err.to_string().ends_with(
            "acs-manifest.json: schema_version 2 is not supported by this acs (supports 1)"
        ));
    }

    #[test]
    fn bad_json_names_line_and_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = DatasetManifest::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, SchemaError::Io { .. }));
        assert!(err.to_string().contains(MANIFEST_FILE), "{err}");
        let err = DatasetManifest::load(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(": not an acs dataset (no acs-manifest.json)"),
            "{err}"
        );

        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "{\n  \"schema_version\": 1,\n  oops\n}",
        )
        .unwrap();
        let err = DatasetManifest::load(dir.path()).unwrap_err();
        assert!(matches!(err, SchemaError::Json { line: 3, .. }), "{err}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["model"]["extra"] = 1.into();
        let text = serde_json::to_string_pretty(&v).unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
        let err = DatasetManifest::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}
