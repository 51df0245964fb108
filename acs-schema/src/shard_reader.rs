//! Reading a shard one row group at a time, local or remote, hashing each byte once.
//!
//! The footer is read first (one request for the file's tail); then the file is read in order,
//! one row group's bytes at a time, and every byte read goes through SHA-256 exactly once, so
//! memory follows the row-group size and the file's hash comes with its rows for free.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::parquet_to_arrow_schema;
use parquet::errors::ParquetError;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use sha2::{Digest, Sha256};

use crate::convert::batch_to_records;
use crate::error::SchemaError;
use crate::location::DatasetLocation;
use crate::record::PairRecord;
use crate::remote::RemoteDir;
use crate::schema::{HUGGINGFACE_METADATA_KEY, SCHEMA_VERSION_METADATA_KEY};
use crate::shard::{ShardFacts, ShardFooter, ROW_GROUP_ROWS};

/// Rows per Arrow batch while decoding a row group: a quarter of a row group, so the decoded
/// Arrow buffers add a fraction of a row group to the rows being returned.
const DECODE_BATCH_ROWS: usize = ROW_GROUP_ROWS / 4;

/// Bytes of the file's tail fetched to find the footer (most footers fit, saving a request).
const TAIL_GUESS: u64 = 64 << 10;

/// Where the bytes come from.
enum Source {
    Local(File),
    Remote(RemoteDir, String),
}

impl Source {
    fn read(&mut self, name: &Path, start: u64, end: u64) -> Result<Bytes, SchemaError> {
        match self {
            Self::Local(file) => {
                let len = usize::try_from(end - start)
                    .map_err(|_| SchemaError::invalid(name, "range too large"))?;
                let mut buffer = vec![0u8; len];
                file.seek(SeekFrom::Start(start))
                    .and_then(|_| file.read_exact(&mut buffer))
                    .map_err(|e| SchemaError::io(name, e))?;
                Ok(Bytes::from(buffer))
            }
            Self::Remote(dir, relative) => dir.get_range(relative, start..end),
        }
    }
}

/// A part of the file held in memory, served to the Parquet reader as if it were the file.
struct Window {
    base: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Length for Window {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for Window {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let end = self.base + self.bytes.len() as u64;
        Ok(self
            .get_bytes(start, (end.saturating_sub(start)) as usize)?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let offset = start
            .checked_sub(self.base)
            .map(|o| o as usize)
            .filter(|&o| o.checked_add(length).is_some_and(|e| e <= self.bytes.len()))
            .ok_or_else(|| {
                ParquetError::EOF(format!(
                    "{length} bytes at offset {start} lie outside their row group"
                ))
            })?;
        Ok(self.bytes.slice(offset..offset + length))
    }
}

/// A shard opened for reading: its footer, then its rows one row group at a time
/// ([`ShardReader::next_row_group`]), then its size and SHA-256 ([`ShardReader::finish`]).
///
/// ```no_run
/// # fn main() -> Result<(), acs_schema::SchemaError> {
/// let mut reader = acs_schema::ShardReader::open("out/smoke/data/train-00000-of-00001.parquet".as_ref())?;
/// while let Some(rows) = reader.next_row_group()? {
///     println!("{} rows", rows.len());
/// }
/// println!("sha256 {}", reader.finish()?.sha256);
/// # Ok(())
/// # }
/// ```
pub struct ShardReader {
    name: PathBuf,
    source: Source,
    len: u64,
    metadata: Arc<ParquetMetaData>,
    /// Length of the serialized metadata (it ends 8 bytes before the end of the file).
    metadata_len: u64,
    arrow: Option<ArrowReaderMetadata>,
    /// Byte range of each row group (streaming) or `None` (read the whole file at once).
    groups: Option<Vec<(u64, u64)>>,
    whole: Option<Bytes>,
    cursor: u64,
    hasher: Sha256,
    next_group: usize,
    first_row: usize,
}

impl ShardReader {
    /// Opens the shard at `path` (a local file, or an object-store URL such as
    /// `s3://bucket/ds/data/train-00000-of-00001.parquet`) and reads its footer.
    pub fn open(path: &Path) -> Result<Self, SchemaError> {
        if DatasetLocation::is_url(path) {
            let text = path.to_string_lossy();
            let (parent, file) = text.rsplit_once('/').unwrap_or((&text, ""));
            let dir = DatasetLocation::parse(parent)?;
            return Self::open_in(&dir, file);
        }
        let file = File::open(path).map_err(|e| SchemaError::io(path, e))?;
        let len = file.metadata().map_err(|e| SchemaError::io(path, e))?.len();
        Self::start(path.to_path_buf(), Source::Local(file), len)
    }

    /// Opens shard `relative` of the dataset folder `dir` and reads its footer.
    pub fn open_in(dir: &DatasetLocation, relative: &str) -> Result<Self, SchemaError> {
        match dir {
            DatasetLocation::Local(root) => Self::open(&root.join(relative)),
            DatasetLocation::Remote(remote) => {
                let name = PathBuf::from(remote.url_of(relative));
                let len = remote
                    .size(relative)?
                    .ok_or_else(|| SchemaError::invalid(&name, "not found"))?;
                Self::start(
                    name,
                    Source::Remote(remote.clone(), relative.to_owned()),
                    len,
                )
            }
        }
    }

    fn start(name: PathBuf, mut source: Source, len: u64) -> Result<Self, SchemaError> {
        let (metadata, metadata_len) = guarded(&name, "footer", |name| {
            read_metadata(name, &mut source, len)
        })?;
        let mut reader = Self {
            name,
            source,
            len,
            metadata: Arc::new(metadata),
            metadata_len,
            arrow: None,
            groups: None,
            whole: None,
            cursor: 0,
            hasher: Sha256::new(),
            next_group: 0,
            first_row: 0,
        };
        let name = reader.name.clone();
        reader.groups = guarded(&name, "footer", |_| Ok(reader.stream_plan()))?;
        Ok(reader)
    }

    /// The row groups' byte ranges when they lie in file order between the leading magic and
    /// the footer (as every writer lays them out); `None` otherwise.
    fn stream_plan(&self) -> Option<Vec<(u64, u64)>> {
        let footer_start = self.len.checked_sub(8 + self.metadata_len)?;
        let mut previous_end = 4u64;
        let mut plan = Vec::new();
        for group in self.metadata.row_groups() {
            let mut range: Option<(u64, u64)> = None;
            for column in group.columns() {
                let start = column
                    .dictionary_page_offset()
                    .unwrap_or(column.data_page_offset());
                let start = u64::try_from(start).ok()?;
                let end = start.checked_add(u64::try_from(column.compressed_size()).ok()?)?;
                range = Some(match range {
                    None => (start, end),
                    Some((a, b)) => (a.min(start), b.max(end)),
                });
            }
            let (start, end) = range.unwrap_or((previous_end, previous_end));
            if start < previous_end || end > footer_start {
                return None;
            }
            plan.push((start, end));
            previous_end = end;
        }
        Some(plan)
    }

    /// The shard's name in errors: its path or URL.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never for a readable shard).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the footer says: row count, key-value metadata, whether the schema is v1.
    pub fn footer(&self) -> Result<ShardFooter, SchemaError> {
        let meta = self.metadata.file_metadata();
        let rows = u64::try_from(meta.num_rows()).map_err(|_| {
            SchemaError::invalid(
                &self.name,
                format!("negative row count {}", meta.num_rows()),
            )
        })?;
        let kv = meta.key_value_metadata();
        let value = |key: &str| {
            kv.and_then(|kv| kv.iter().find(|e| e.key == key))
                .and_then(|e| e.value.clone())
        };
        let arrow_schema_matches = guarded(&self.name, "footer", |_| {
            Ok(parquet_to_arrow_schema(meta.schema_descr(), kv)
                .map(|schema| crate::schema::is_schema_v1(schema.fields()))
                .unwrap_or(false))
        })?;
        Ok(ShardFooter {
            rows,
            schema_version: value(SCHEMA_VERSION_METADATA_KEY),
            huggingface: value(HUGGINGFACE_METADATA_KEY),
            arrow_schema_matches,
        })
    }

    /// Number of row groups.
    pub fn row_groups(&self) -> usize {
        self.metadata.num_row_groups()
    }

    /// The rows of the next row group; `None` after the last. Errors name the file and, for
    /// bad values, the row (counted from the start of the file) and the column.
    pub fn next_row_group(&mut self) -> Result<Option<Vec<PairRecord>>, SchemaError> {
        let index = self.next_group;
        if index >= self.metadata.num_row_groups() {
            return Ok(None);
        }
        self.next_group += 1;
        let window = self.window(index)?;
        if self.arrow.is_none() {
            let metadata = Arc::clone(&self.metadata);
            let arrow = guarded(&self.name, "footer", |name| {
                ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new())
                    .map_err(|e| SchemaError::parquet(name, e))
            })?;
            self.arrow = Some(arrow);
        }
        let Some(arrow) = self.arrow.clone() else {
            return Ok(None);
        };
        let first_row = self.first_row;
        let records = guarded(&self.name, "data", |name| {
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(window, arrow)
                .with_row_groups(vec![index])
                .with_batch_size(DECODE_BATCH_ROWS)
                .build()
                .map_err(|e| SchemaError::parquet(name, e))?;
            let mut records = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| SchemaError::arrow(name, e))?;
                let first = first_row + records.len();
                records.extend(batch_to_records(&batch, name, first)?);
            }
            Ok(records)
        })?;
        self.first_row += records.len();
        Ok(Some(records))
    }

    /// The bytes row group `index` is read from: its range (and any gap before it), hashed
    /// as it is read; or the whole file when the row groups are not laid out in order.
    fn window(&mut self, index: usize) -> Result<Window, SchemaError> {
        if let Some(groups) = &self.groups {
            let (_, end) = groups[index];
            let start = self.cursor;
            let bytes = self.source.read(&self.name, start, end)?;
            self.hasher.update(&bytes);
            self.cursor = end;
            return Ok(Window {
                base: start,
                bytes,
                file_len: self.len,
            });
        }
        if self.whole.is_none() {
            let bytes = self.source.read(&self.name, 0, self.len)?;
            self.hasher.update(&bytes);
            self.cursor = self.len;
            self.whole = Some(bytes);
        }
        Ok(Window {
            base: 0,
            bytes: self.whole.clone().unwrap_or_default(),
            file_len: self.len,
        })
    }

    /// Reads (and hashes) what was not read yet, in bounded chunks; the file's row count, size
    /// and SHA-256.
    pub fn finish(mut self) -> Result<ShardFacts, SchemaError> {
        const CHUNK: u64 = 8 << 20;
        while self.cursor < self.len {
            let end = (self.cursor + CHUNK).min(self.len);
            let bytes = self.source.read(&self.name, self.cursor, end)?;
            self.hasher.update(&bytes);
            self.cursor = end;
        }
        Ok(ShardFacts {
            rows: self.footer()?.rows,
            bytes: self.len,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }

    /// Every remaining row, then the facts (the whole shard in memory: prefer
    /// [`ShardReader::next_row_group`] for large shards).
    pub fn read_all(mut self) -> Result<(Vec<PairRecord>, ShardFacts), SchemaError> {
        let mut records = Vec::new();
        while let Some(rows) = self.next_row_group()? {
            records.extend(rows);
        }
        let facts = self.finish()?;
        Ok((records, facts))
    }
}

/// Reads the footer: the tail of the file, then the metadata it points to.
fn read_metadata(
    name: &Path,
    source: &mut Source,
    len: u64,
) -> Result<(ParquetMetaData, u64), SchemaError> {
    let corrupt = |detail: String| SchemaError::parquet(name, ParquetError::General(detail));
    if len < 12 {
        return Err(corrupt(format!(
            "Invalid Parquet file. Size is smaller than footer ({len} bytes)"
        )));
    }
    let tail_start = len.saturating_sub(TAIL_GUESS);
    let tail = source.read(name, tail_start, len)?;
    let mut last8 = [0u8; 8];
    last8.copy_from_slice(&tail[tail.len() - 8..]);
    let footer = FooterTail::try_new(&last8).map_err(|e| SchemaError::parquet(name, e))?;
    let metadata_len = footer.metadata_length() as u64;
    if metadata_len + 8 + 4 > len {
        return Err(corrupt(format!(
            "Invalid Parquet file. Reported metadata length of {metadata_len} + 8 byte footer, \
             but file is only {len} bytes"
        )));
    }
    let metadata_start = len - 8 - metadata_len;
    let bytes = if metadata_start >= tail_start {
        let from = (metadata_start - tail_start) as usize;
        tail.slice(from..tail.len() - 8)
    } else {
        source.read(name, metadata_start, len - 8)?
    };
    let metadata = ParquetMetaDataReader::decode_metadata(&bytes)
        .map_err(|e| SchemaError::parquet(name, e))?;
    Ok((metadata, metadata_len))
}

/// Runs `f`; a panic of the Parquet reader becomes an error naming the file.
fn guarded<T>(
    name: &Path,
    what: &str,
    f: impl FnOnce(&Path) -> Result<T, SchemaError>,
) -> Result<T, SchemaError> {
    crate::guard::guard(|| f(name)).unwrap_or_else(|panic| {
        Err(SchemaError::invalid(
            name,
            format!("malformed Parquet {what} (the reader failed: {panic})"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_file;
    use crate::record::fixtures;
    use crate::shard::write_shard;

    #[test]
    fn row_groups_one_at_a_time_and_the_hash_of_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let input = fixtures::mixed(150);
        let written = write_shard(&path, &input).unwrap();
        let mut reader = ShardReader::open(&path).unwrap();
        assert_eq!(reader.row_groups(), 3);
        assert_eq!(reader.len(), written.bytes);
        assert_eq!(reader.footer().unwrap().rows, 150);
        assert!(reader.groups.is_some(), "row groups laid out in order");
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        while let Some(rows) = reader.next_row_group().unwrap() {
            sizes.push(rows.len());
            all.extend(rows);
        }
        assert_eq!(sizes, [64, 64, 22]);
        assert_eq!(all, input);
        let facts = reader.finish().unwrap();
        assert_eq!(facts, written);
        assert_eq!(facts.sha256, sha256_file(&path).unwrap());
        // Stopping early still hashes the whole file.
        let mut reader = ShardReader::open(&path).unwrap();
        reader.next_row_group().unwrap();
        assert_eq!(reader.finish().unwrap(), written);
    }

    #[test]
    fn damage_is_an_error_or_a_different_hash_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let written = write_shard(&path, &fixtures::mixed(70)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for at in [4, 100, bytes.len() / 2, bytes.len() - 20, bytes.len() - 6] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5A;
            std::fs::write(&path, &damaged).unwrap();
            let Ok(mut reader) = ShardReader::open(&path) else {
                continue;
            };
            let mut failed = false;
            loop {
                match reader.next_row_group() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.to_string().contains("s.parquet"), "{e}");
                        failed = true;
                        break;
                    }
                }
            }
            let facts = reader.finish().unwrap();
            assert_ne!(facts.sha256, written.sha256, "byte {at} (failed: {failed})");
        }
        std::fs::write(&path, b"PAR1").unwrap();
        let err = ShardReader::open(&path).err().unwrap();
        assert!(matches!(err, SchemaError::Parquet { .. }), "{err}");
    }
}
