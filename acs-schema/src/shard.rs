//! Parquet shards of schema v1: the writer (atomic, deterministic) and the readers.

use std::io::{BufWriter, Write};
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::atomic::write_atomic_with;
use crate::convert::records_to_batch;
use crate::digest::HashingWriter;
use crate::error::SchemaError;
use crate::record::PairRecord;
use crate::schema::{
    arrow_schema, huggingface_metadata, HUGGINGFACE_METADATA_KEY, IMAGE_COLUMNS,
    SCHEMA_VERSION_METADATA_KEY,
};
use crate::shard_reader::ShardReader;
use crate::SCHEMA_VERSION;

/// Rows per row group (and per Arrow batch while reading): images are large.
pub const ROW_GROUP_ROWS: usize = 64;

/// zstd level of the non-image columns.
pub const ZSTD_LEVEL: i32 = 3;

/// Facts about a shard file just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFacts {
    /// Number of rows.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Facts read from a shard's Parquet footer, without reading any data page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFooter {
    /// Row count recorded in the footer.
    pub rows: u64,
    /// The `acs_schema_version` key-value metadata, if present.
    pub schema_version: Option<String>,
    /// The `huggingface` key-value metadata, if present.
    pub huggingface: Option<String>,
    /// Whether the file's Arrow schema equals [`arrow_schema`] exactly.
    pub arrow_schema_matches: bool,
}

/// The relative path of shard `index` of `count` of a split: `data/{split}-{i:05}-of-{n:05}.parquet`.
pub fn shard_path(split: &str, index: usize, count: usize) -> String {
    format!("data/{split}-{index:05}-of-{count:05}.parquet")
}

/// The Parquet writer properties of schema v1 shards.
///
/// Image columns (`unsafe_image.bytes`, `unsafe_image.path`, `safe_image.bytes`,
/// `safe_image.path`): no dictionary, PLAIN, UNCOMPRESSED (PNG is compressed already). All other
/// columns: zstd level 3, default dictionary and statistics settings. Row groups of at most
/// [`ROW_GROUP_ROWS`] rows. Key-value metadata `huggingface` and `acs_schema_version`.
pub fn writer_properties() -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(HUGGINGFACE_METADATA_KEY.to_string(), huggingface_metadata()),
            KeyValue::new(
                SCHEMA_VERSION_METADATA_KEY.to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ]));
    for column in IMAGE_COLUMNS {
        for child in ["bytes", "path"] {
            let path = || ColumnPath::new(vec![column.to_string(), child.to_string()]);
            builder = builder
                .set_column_dictionary_enabled(path(), false)
                .set_column_encoding(path(), Encoding::PLAIN)
                .set_column_compression(path(), Compression::UNCOMPRESSED);
        }
    }
    builder.build()
}

/// Writes `records` as one Parquet file at `path`.
///
/// The file is written to the temporary sibling `.{name}.tmp`, fsynced and renamed to `path`, so
/// a reader never sees a partial shard. Settings are those of [`writer_properties`]; the output
/// is byte-identical for identical input. Returns the row count, size and SHA-256 of the file.
pub fn write_shard(path: &Path, records: &[PairRecord]) -> Result<ShardFacts, SchemaError> {
    write_atomic_with(path, |file, tmp| {
        let sink = HashingWriter::new(BufWriter::new(file));
        let mut writer = ArrowWriter::try_new(sink, arrow_schema(), Some(writer_properties()))
            .map_err(|e| SchemaError::parquet(tmp, e))?;
        for (k, chunk) in records.chunks(ROW_GROUP_ROWS).enumerate() {
            let batch = records_to_batch(chunk).map_err(|e| match e {
                SchemaError::Record {
                    index,
                    field,
                    detail,
                } => SchemaError::Record {
                    index: index + k * ROW_GROUP_ROWS,
                    field,
                    detail,
                },
                other => other,
            })?;
            writer
                .write(&batch)
                .map_err(|e| SchemaError::parquet(tmp, e))?;
        }
        let sink = writer
            .into_inner()
            .map_err(|e| SchemaError::parquet(tmp, e))?;
        let (mut buffered, bytes, sha256) = sink.finish();
        buffered.flush().map_err(|e| SchemaError::io(tmp, e))?;
        Ok(ShardFacts {
            rows: records.len() as u64,
            bytes,
            sha256,
        })
    })
}

/// Reads all rows of a shard (a local path or an object-store URL). Errors name the file and,
/// for bad values, the row and column. A malformed file that makes the Parquet reader panic is
/// an error too. The file is read one row group at a time ([`ShardReader`]).
pub fn read_shard(path: &Path) -> Result<Vec<PairRecord>, SchemaError> {
    Ok(ShardReader::open(path)?.read_all()?.0)
}

/// Reads a shard's Parquet footer only: row count, key-value metadata and whether the Arrow
/// schema is schema v1.
pub fn read_shard_footer(path: &Path) -> Result<ShardFooter, SchemaError> {
    ShardReader::open(path)?.footer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_file;
    use crate::record::fixtures;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::fs::File;

    #[test]
    fn round_trip_with_nulls_and_empty_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-00000-of-00001.parquet");
        let input = fixtures::mixed(150);
        let facts = write_shard(&path, &input).unwrap();
        assert_eq!(facts.rows, 150);
        assert_eq!(facts.bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!(facts.sha256, sha256_file(&path).unwrap());
        assert_eq!(read_shard(&path).unwrap(), input);

        let footer = read_shard_footer(&path).unwrap();
        assert_eq!(
            footer,
            ShardFooter {
                rows: 150,
                schema_version: Some("1".into()),
                huggingface: Some(huggingface_metadata()),
                arrow_schema_matches: true,
            }
        );
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [64, 64, 22]);
    }

    #[test]
    fn small_and_empty_shards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        write_shard(&path, &fixtures::mixed(64)).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);

        let facts = write_shard(&path, &[]).unwrap();
        assert_eq!(facts.rows, 0);
        assert!(read_shard(&path).unwrap().is_empty());
        assert_eq!(read_shard_footer(&path).unwrap().rows, 0);
    }

    #[test]
    fn deterministic_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let input = fixtures::mixed(70);
        let a = write_shard(&dir.path().join("a.parquet"), &input).unwrap();
        let b = write_shard(&dir.path().join("b.parquet"), &input).unwrap();
        assert_eq!(a, b);
        let again = write_shard(&dir.path().join("a.parquet"), &input).unwrap();
        assert_eq!(a, again);
    }

    #[test]
    fn leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        write_shard(&dir.path().join("x.parquet"), &fixtures::mixed(3)).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["x.parquet"]);
    }

    #[test]
    fn column_encodings_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        write_shard(&path, &fixtures::mixed(10)).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let mut image_chunks = 0;
        for chunk in group.columns() {
            let name = chunk.column_path().string();
            let is_image = IMAGE_COLUMNS
                .iter()
                .any(|c| name.starts_with(&format!("{c}.")));
            if is_image {
                image_chunks += 1;
                assert_eq!(chunk.compression(), Compression::UNCOMPRESSED, "{name}");
                assert_eq!(chunk.dictionary_page_offset(), None, "{name}");
                let encodings: Vec<Encoding> = chunk.encodings().collect();
                assert!(
                    encodings.contains(&Encoding::PLAIN),
                    "{name}: {encodings:?}"
                );
                assert!(
                    !encodings.contains(&Encoding::RLE_DICTIONARY)
                        && !encodings.contains(&Encoding::PLAIN_DICTIONARY),
                    "{name}: {encodings:?}"
                );
            } else {
                assert!(
                    matches!(chunk.compression(), Compression::ZSTD(_)),
                    "{name}: {:?}",
                    chunk.compression()
                );
            }
        }
        assert_eq!(image_chunks, 2 * IMAGE_COLUMNS.len());
        let unsafe_bytes = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "unsafe_image.bytes");
        assert!(unsafe_bytes.is_some());
    }

    #[test]
    fn non_parquet_file_error_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "this is not parquet, just some text long enough").unwrap();
        for err in [
            read_shard(&path).unwrap_err(),
            read_shard_footer(&path).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(matches!(err, SchemaError::Parquet { .. }), "{msg}");
        }
        let missing = dir.path().join("missing.parquet");
        let err = read_shard(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.parquet"), "{err}");
    }

    #[test]
    fn shard_path_format() {
        assert_eq!(
            shard_path("train", 0, 1),
            "data/train-00000-of-00001.parquet"
        );
    }
}
