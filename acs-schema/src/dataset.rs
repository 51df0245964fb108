//! Loading a finished dataset: typed rows and a polars `LazyFrame`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use polars::prelude::{
    DataFrame, DataType as PlDataType, Field as PlField, HiveOptions, IntoLazy, LazyFrame,
    PlRefPath, ScanArgsParquet, Schema as PlSchema,
};

use crate::error::SchemaError;
use crate::location::DatasetLocation;
use crate::manifest::{DatasetManifest, ShardEntry};
use crate::record::PairRecord;
use crate::shard_reader::ShardReader;

/// A dataset: a directory (local, or in object storage) with `acs-manifest.json` and the
/// Parquet shards it lists.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    location: DatasetLocation,
    manifest: DatasetManifest,
}

impl Dataset {
    /// Opens the dataset in `dir`: loads its manifest and checks that every listed shard path is
    /// relative and stays inside `dir` (no absolute paths, no `..`), exists as a file, and has
    /// the size the manifest records.
    ///
    /// A dataset whose build is still running or was interrupted opens too (its manifest lists
    /// only finished shards); check [`DatasetManifest::complete`] via [`Dataset::manifest`].
    ///
    /// `dir` may be an object-store URL (`s3://bucket/prefix`, `gs://...`, `az://...`; see
    /// [`DatasetLocation`]): the manifest and the shards are then read from the store, with
    /// credentials and endpoint from the store's environment variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
    ///
    /// ```no_run
    /// use acs_schema::Dataset;
    /// use polars::prelude::*;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ds = Dataset::open("out/my-acs-dataset")?;
    /// println!("{} rows: {:?}", ds.manifest().total_rows(), ds.manifest().rows_per_split());
    ///
    /// // Typed rows.
    /// for pair in ds.split_records("train")? {
    ///     println!("{} | {} -> {} (ssim {:.3})", pair.pair_id, pair.unsafe_prompt, pair.safe_prompt, pair.ssim);
    ///     let _png: &[u8] = &pair.unsafe_image.bytes;
    /// }
    ///
    /// // Polars: all shards as one LazyFrame.
    /// let valid_per_category = ds
    ///     .lazy()?
    ///     .filter(col("valid"))
    ///     .group_by([col("category")])
    ///     .agg([len().alias("pairs"), col("ssim").mean().alias("mean_ssim")])
    ///     .collect()?;
    /// println!("{valid_per_category}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SchemaError> {
        Self::open_location(DatasetLocation::from_path(dir.as_ref())?)
    }

    /// Opens the dataset at `location` (a local folder or an object-store folder; see
    /// [`Dataset::open`], which parses the location from a path or URL).
    pub fn open_location(location: DatasetLocation) -> Result<Self, SchemaError> {
        let root = match &location {
            DatasetLocation::Local(path) => path.clone(),
            DatasetLocation::Remote(dir) => PathBuf::from(dir.url()),
        };
        let manifest = DatasetManifest::load_from(&location)?;
        let manifest_path = location.name_of(crate::MANIFEST_FILE);
        // One listing gives the sizes of every object of a remote dataset.
        let remote_sizes: Option<HashMap<String, u64>> = match &location {
            DatasetLocation::Remote(dir) => Some(dir.list()?.into_iter().collect()),
            DatasetLocation::Local(_) => None,
        };
        for (index, shard) in manifest.shards.iter().enumerate() {
            check_relative(&shard.path).map_err(|why| {
                SchemaError::invalid(
                    &manifest_path,
                    format!("shards[{index}].path {:?} {why}", shard.path),
                )
            })?;
            let path = location.name_of(&shard.path);
            let size = match &remote_sizes {
                Some(sizes) => sizes.get(&shard.path).copied(),
                None => local_size(&path)?,
            };
            let Some(size) = size else {
                return Err(SchemaError::invalid(
                    &path,
                    format!("listed in {} but missing", manifest_path.display()),
                ));
            };
            if size != shard.bytes {
                return Err(SchemaError::invalid(
                    &path,
                    format!(
                        "size {} bytes differs from the {} bytes recorded in {}",
                        size,
                        shard.bytes,
                        manifest_path.display()
                    ),
                ));
            }
        }
        Ok(Self {
            root,
            location,
            manifest,
        })
    }

    /// The dataset directory (for a remote dataset, its URL as a path, e.g. `s3://bucket/ds`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the dataset lives.
    pub fn location(&self) -> &DatasetLocation {
        &self.location
    }

    /// Opens a shard of the manifest for reading one row group at a time.
    pub fn open_shard(&self, shard: &ShardEntry) -> Result<ShardReader, SchemaError> {
        self.location.open_shard(&shard.path)
    }

    /// The loaded manifest.
    pub fn manifest(&self) -> &DatasetManifest {
        &self.manifest
    }

    /// Full paths of the shards (URLs for a remote dataset), in manifest order; only those of
    /// `split` when given.
    pub fn shard_paths(&self, split: Option<&str>) -> Vec<PathBuf> {
        self.shards(split)
            .map(|s| self.location.name_of(&s.path))
            .collect()
    }

    /// All rows of all shards, in manifest order.
    pub fn records(&self) -> Result<Vec<PairRecord>, SchemaError> {
        self.read(None)
    }

    /// All rows of the shards of `split`, in manifest order (empty for an unknown split).
    pub fn split_records(&self, split: &str) -> Result<Vec<PairRecord>, SchemaError> {
        self.read(Some(split))
    }

    /// A polars scan over all shards (concatenated, manifest order).
    pub fn lazy(&self) -> Result<LazyFrame, SchemaError> {
        self.scan(None)
    }

    /// A polars scan over the shards of `split`.
    pub fn lazy_split(&self, split: &str) -> Result<LazyFrame, SchemaError> {
        self.scan(Some(split))
    }

    fn shards<'a>(&'a self, split: Option<&'a str>) -> impl Iterator<Item = &'a ShardEntry> + 'a {
        self.manifest
            .shards
            .iter()
            .filter(move |s| split.is_none_or(|want| s.split == want))
    }

    fn read(&self, split: Option<&str>) -> Result<Vec<PairRecord>, SchemaError> {
        let mut out = Vec::new();
        for shard in self.shards(split) {
            let path = self.location.name_of(&shard.path);
            let (rows, _) = self.open_shard(shard)?.read_all()?;
            if rows.len() as u64 != shard.rows {
                return Err(SchemaError::invalid(
                    &path,
                    format!(
                        "holds {} rows but {} lists {}",
                        rows.len(),
                        crate::MANIFEST_FILE,
                        shard.rows
                    ),
                ));
            }
            out.extend(rows);
        }
        Ok(out)
    }

    fn scan(&self, split: Option<&str>) -> Result<LazyFrame, SchemaError> {
        let paths = self.shard_paths(split);
        if paths.is_empty() {
            return Ok(DataFrame::empty_with_schema(&polars_schema()).lazy());
        }
        let refs = paths
            .iter()
            .map(|p| match &self.location {
                DatasetLocation::Remote(_) => Ok(PlRefPath::new(p.to_string_lossy().as_ref())),
                DatasetLocation::Local(_) => {
                    PlRefPath::try_from_path(p).map_err(|error| SchemaError::Polars {
                        path: p.clone(),
                        error,
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let args = ScanArgsParquet {
            glob: false,
            hive_options: HiveOptions::new_disabled(),
            cloud_options: self
                .location
                .as_remote()
                .map(crate::remote_client::polars_cloud_options),
            ..Default::default()
        };
        LazyFrame::scan_parquet_files(refs.into_iter().collect(), args).map_err(|error| {
            SchemaError::Polars {
                path: self.root.clone(),
                error,
            }
        })
    }
}

/// The size of a local file; `None` when it does not exist.
fn local_size(path: &Path) -> Result<Option<u64>, SchemaError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
        Ok(_) => Err(SchemaError::invalid(path, "not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SchemaError::io(path, e)),
    }
}

/// Whether `split` is a safe split name (ASCII letters, digits and `_`): it becomes part of
/// shard file names.
pub fn is_split_name(split: &str) -> bool {
    !split.is_empty() && split.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a manifest shard path is not a plain relative path inside the dataset, if it is not.
/// Checks that a manifest path is relative and stays inside the dataset directory; the error
/// says why not.
pub fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\\') {
        return Err("contains a backslash (use '/')");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err("is absolute (must be relative to the dataset directory)");
    }
    for component in p.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err("contains '..' (must stay inside the dataset directory)")
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute (must be relative to the dataset directory)")
            }
        }
    }
    Ok(())
}

/// Schema v1 as a polars schema (used for the empty frame of a dataset without shards).
fn polars_schema() -> PlSchema {
    fn convert(dt: &arrow_schema::DataType) -> PlDataType {
        use arrow_schema::DataType as A;
        match dt {
            A::Utf8 => PlDataType::String,
            A::Binary => PlDataType::Binary,
            A::Int32 => PlDataType::Int32,
            A::UInt64 => PlDataType::UInt64,
            A::Float32 => PlDataType::Float32,
            A::Boolean => PlDataType::Boolean,
            A::List(item) => PlDataType::List(Box::new(convert(item.data_type()))),
            A::Struct(fields) => PlDataType::Struct(
                fields
                    .iter()
                    .map(|f| PlField::new(f.name().as_str().into(), convert(f.data_type())))
                    .collect(),
            ),
            _ => PlDataType::Null,
        }
    }
    crate::schema::arrow_schema()
        .fields()
        .iter()
        .map(|f| PlField::new(f.name().as_str().into(), convert(f.data_type())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::record::fixtures;
    use crate::shard::write_shard;

    /// A dataset with a 3-row train shard and a 2-row test shard.
    fn build(dir: &Path) -> (DatasetManifest, Vec<PairRecord>, Vec<PairRecord>) {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let train = vec![fixtures::full(0), fixtures::sparse(1), fixtures::full(2)];
        let test = vec![fixtures::sparse(3), fixtures::full(4)];
        let mut m = sample();
        for (entry, rows) in m.shards.iter_mut().zip([&train, &test]) {
            let facts = write_shard(&dir.join(&entry.path), rows).unwrap();
            entry.rows = facts.rows;
            entry.bytes = facts.bytes;
            entry.sha256 = facts.sha256;
        }
        m.save(dir).unwrap();
        (m, train, test)
    }

    #[test]
    fn open_read_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (m, train, test) = build(dir.path());
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.manifest(), &m);
        assert_eq!(ds.root(), dir.path());
        assert_eq!(
            ds.shard_paths(Some("test")),
            [dir.path().join("data/test-00000-of-00001.parquet")]
        );
        assert_eq!(ds.shard_paths(None).len(), 2);
        let all: Vec<PairRecord> = train.iter().chain(&test).cloned().collect();
        assert_eq!(ds.records().unwrap(), all);
        assert_eq!(ds.split_records("test").unwrap(), test);
        assert!(ds.split_records("validation").unwrap().is_empty());

        let df = ds.lazy().unwrap().collect().unwrap();
        assert_eq!(df.height() as u64, m.total_rows());
        assert_eq!(df.width(), crate::COLUMNS.len());
        let seeds = df.column("seed").unwrap();
        assert_eq!(seeds.dtype(), &PlDataType::UInt64);
        let df = ds.lazy_split("train").unwrap().collect().unwrap();
        assert_eq!(df.height(), 3);
        let empty = ds.lazy_split("nope").unwrap().collect().unwrap();
        assert_eq!((empty.height(), empty.width()), (0, crate::COLUMNS.len()));
    }

    #[test]
    fn rejects_escaping_and_missing_shards() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _, _) = build(dir.path());
        for bad in ["/etc/passwd", "../x.parquet", "data/../../x.parquet", ""] {
            let mut bad_m = m.clone();
            bad_m.shards[1].path = bad.into();
            bad_m.save(dir.path()).unwrap();
            let err = Dataset::open(dir.path()).unwrap_err();
            assert!(err.to_string().contains("shards[1].path"), "{bad}: {err}");
        }
        let mut missing = m.clone();
        missing.shards[0].path = "data/gone.parquet".into();
        missing.save(dir.path()).unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("gone.parquet") && err.contains("missing"),
            "{err}"
        );

        let mut wrong_size = m.clone();
        wrong_size.shards[0].bytes += 1;
        wrong_size.save(dir.path()).unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("differs"), "{err}");

        let mut wrong_rows = m;
        wrong_rows.shards[0].rows = 4;
        wrong_rows.save(dir.path()).unwrap();
        let err = Dataset::open(dir.path())
            .unwrap()
            .records()
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds 3 rows"), "{err}");
    }

    #[test]
    fn empty_dataset_has_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample();
        m.shards.clear();
        m.save(dir.path()).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert!(ds.records().unwrap().is_empty());
        let df = ds.lazy().unwrap().collect().unwrap();
        assert_eq!((df.height(), df.width()), (0, crate::COLUMNS.len()));
    }
}
