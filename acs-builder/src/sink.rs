//! The shard sink: buffers rows per split, writes full shards atomically, rewrites the dataset
//! manifest after each shard, and at the end gives shards their `-of-N` names. It knows nothing
//! about the diffusion runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use acs_schema::{shard_path, write_atomic, write_shard, DatasetManifest, PairRecord, ShardEntry};

use crate::error::AcsError;

/// Rows of one split waiting for their shard.
#[derive(Default)]
struct SplitBuffer {
    rows: Vec<PairRecord>,
    bytes: u64,
    next_index: usize,
}

/// Writes records into `DIR/data/` and keeps `DIR/acs-manifest.json` current.
pub struct ShardSink {
    root: PathBuf,
    created_root: bool,
    manifest: DatasetManifest,
    shard_rows: usize,
    shard_bytes: u64,
    buffers: BTreeMap<String, SplitBuffer>,
}

/// Approximate encoded size of a row, for the shard_bytes limit.
fn row_bytes(record: &PairRecord) -> u64 {
    (record.unsafe_image.bytes.len()
        + record.safe_image.bytes.len()
        + record.unsafe_latent.as_ref().map_or(0, Vec::len)
        + record.safe_latent.as_ref().map_or(0, Vec::len)
        + record.unsafe_prompt.len()
        + record.safe_prompt.len()
        + 512) as u64
}

impl ShardSink {
    /// A sink writing under `root` (created if missing) with an initial, incomplete manifest.
    pub fn create(
        root: &Path,
        mut manifest: DatasetManifest,
        shard_rows: usize,
        shard_bytes: u64,
    ) -> Result<Self, AcsError> {
        let created_root = !root.exists();
        let data = root.join("data");
        std::fs::create_dir_all(&data).map_err(|e| AcsError::io(&data, e))?;
        manifest.complete = false;
        manifest.shards.clear();
        manifest.save(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            created_root,
            manifest,
            shard_rows: shard_rows.max(1),
            shard_bytes: shard_bytes.max(1),
            buffers: BTreeMap::new(),
        })
    }

    /// Adds a row; writes its split's shard when it is full.
    pub fn push(&mut self, record: PairRecord) -> Result<(), AcsError> {
        let split = record.split.clone();
        let buffer = self.buffers.entry(split.clone()).or_default();
        buffer.bytes += row_bytes(&record);
        buffer.rows.push(record);
        if buffer.rows.len() >= self.shard_rows || buffer.bytes >= self.shard_bytes {
            self.flush(&split)?;
        }
        Ok(())
    }

    fn flush(&mut self, split: &str) -> Result<(), AcsError> {
        let Some(buffer) = self.buffers.get_mut(split) else {
            return Ok(());
        };
        if buffer.rows.is_empty() {
            return Ok(());
        }
        let relative = format!("data/{split}-{:05}.parquet", buffer.next_index);
        let facts = write_shard(&self.root.join(&relative), &buffer.rows)?;
        buffer.next_index += 1;
        buffer.rows.clear();
        buffer.bytes = 0;
        self.manifest.shards.push(ShardEntry {
            path: relative,
            split: split.to_owned(),
            rows: facts.rows,
            bytes: facts.bytes,
            sha256: facts.sha256,
        });
        self.manifest.save(&self.root)?;
        Ok(())
    }

    /// Removes what the sink created when no shard has been written yet (a build that failed
    /// before producing anything leaves no trace); otherwise keeps the finished shards.
    pub fn discard_if_empty(self) {
        if !self.manifest.shards.is_empty() {
            return;
        }
        let _ = std::fs::remove_file(self.root.join(acs_schema::MANIFEST_FILE));
        let _ = std::fs::remove_dir(self.root.join("data"));
        if self.created_root {
            let _ = std::fs::remove_dir(&self.root);
        }
    }

    /// Writes the remaining rows, renames every shard to `{split}-{i:05d}-of-{n:05d}.parquet`,
    /// writes the dataset card made by `card`, and marks the manifest complete (last, so a
    /// complete manifest always describes finished files).
    pub fn finish(
        mut self,
        card: impl FnOnce(&DatasetManifest) -> String,
    ) -> Result<DatasetManifest, AcsError> {
        let splits: Vec<String> = self.buffers.keys().cloned().collect();
        for split in &splits {
            self.flush(split)?;
        }
        let mut per_split: BTreeMap<String, usize> = BTreeMap::new();
        for shard in &self.manifest.shards {
            *per_split.entry(shard.split.clone()).or_insert(0) += 1;
        }
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut shards = std::mem::take(&mut self.manifest.shards);
        shards.sort_by(|a, b| a.split.cmp(&b.split).then(a.path.cmp(&b.path)));
        for shard in &mut shards {
            let i = index.entry(shard.split.clone()).or_insert(0);
            let n = per_split[&shard.split];
            let final_path = shard_path(&shard.split, *i, n);
            *i += 1;
            let from = self.root.join(&shard.path);
            let to = self.root.join(&final_path);
            std::fs::rename(&from, &to).map_err(|e| AcsError::io(&to, e))?;
            shard.path = final_path;
        }
        self.manifest.shards = shards;
        let card_path = self.root.join("README.md");
        write_atomic(&card_path, card(&self.manifest).as_bytes())?;
        self.manifest.complete = true;
        self.manifest.save(&self.root)?;
        Ok(self.manifest)
    }
}
