//! The shard sink: buffers rows per split, writes full shards atomically, rewrites the dataset
//! manifest after each shard, and at the end gives shards their `-of-N` names. With a journal
//! ([`crate::store::journal`]) every rendered batch is spooled first, so a killed build resumes
//! ([`ShardSink::resume`], in [`crate::store::resume`]) with the same shards it would have written uninterrupted. It knows
//! nothing about the diffusion runtime.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use acs_schema::{shard_path, write_atomic, write_shard, DatasetManifest, PairRecord, ShardEntry};

use crate::error::AcsError;
use crate::store::fault;
use crate::store::journal::{Entry, Journal};
use crate::store::publish::{remove_work_dir, Publisher};

/// Rows of one split waiting for their shard.
#[derive(Default)]
pub(super) struct SplitBuffer {
    pub(super) rows: Vec<PairRecord>,
    pub(super) bytes: u64,
    pub(super) next_index: usize,
}

/// A spooled batch whose rows are not all in finished shards yet.
pub(super) struct Spooled {
    pub(super) file: PathBuf,
    pub(super) pair_ids: Vec<String>,
}

/// What a resumed sink already holds.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Pairs that are in a finished shard or spooled: they are not rendered again.
    pub rendered: HashSet<String>,
    /// How many of them.
    pub rows: u64,
}

/// Writes records into `DIR/data/` and keeps `DIR/acs-manifest.json` current.
pub struct ShardSink {
    pub(super) root: PathBuf,
    pub(super) created_root: bool,
    pub(super) manifest: DatasetManifest,
    pub(super) shard_rows: usize,
    pub(super) shard_bytes: u64,
    pub(super) buffers: BTreeMap<String, SplitBuffer>,
    pub(super) journal: Journal,
    pub(super) next_batch: u64,
    /// Pairs in finished (listed) shards.
    pub(super) done: HashSet<String>,
    pub(super) spooled: Vec<Spooled>,
    /// Rows and valid rows in finished shards.
    pub(super) rows: u64,
    pub(super) valid_rows: u64,
    /// Valid rows per provisional shard path (for a resumed finish).
    pub(super) shard_valid: HashMap<String, u64>,
    /// The rename plan of an interrupted finish, to complete.
    pub(super) pending_finish: Option<Vec<(String, String)>>,
    /// Where the dataset is published when the output is in object storage; `root` is then
    /// the local work folder (see [`crate::store::publish`]).
    pub(super) remote: Option<Publisher>,
    /// A worker's plan positions by pair id, recorded in its shard entries for `acs merge`.
    pub(super) plan_positions: Option<HashMap<String, u64>>,
}

/// After a remote build's manifest is written: removes the staging area and the local work
/// folder. Failures only warn: the dataset is complete, and a rerun cleans up again.
pub fn finish_remote(remote: &Publisher, work: &Path) {
    if let Err(err) = remote.clear_staging() {
        tracing::warn!("the dataset is complete, but its staging area was not removed: {err}");
    }
    if let Err(err) = remove_work_dir(work) {
        tracing::warn!("the dataset is complete, but its work folder was not removed: {err}");
    }
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

/// Removes temporary files (`.NAME.tmp`) a killed writer left in `dir`.
pub(super) fn remove_temp_files(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
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
        let journal = Journal::open(root)?;
        manifest.complete = false;
        manifest.shards.clear();
        fault::check_write(&root.join(acs_schema::MANIFEST_FILE))?;
        manifest.save(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            created_root,
            manifest,
            shard_rows: shard_rows.max(1),
            shard_bytes: shard_bytes.max(1),
            buffers: BTreeMap::new(),
            journal,
            next_batch: 0,
            done: HashSet::new(),
            spooled: Vec::new(),
            rows: 0,
            valid_rows: 0,
            shard_valid: HashMap::new(),
            pending_finish: None,
            remote: None,
            plan_positions: None,
        })
    }

    /// The same sink, publishing into object storage: each finished shard is uploaded and its
    /// local copy removed; `finish` publishes the dataset.
    pub fn publishing_to(mut self, publisher: Publisher) -> Self {
        self.remote = Some(publisher);
        self
    }

    /// The same sink, recording in each shard entry where its rows stand in the whole
    /// build's plan (`positions`: pair id -> position), as a worker's sink does for
    /// `acs merge`; `None` records nothing.
    pub fn recording_plan_positions(mut self, positions: Option<HashMap<String, u64>>) -> Self {
        self.plan_positions = positions;
        self
    }

    /// Spools a rendered batch (durably, so a resumed build does not render it again), then
    /// adds its rows.
    pub fn push_batch(&mut self, records: Vec<PairRecord>) -> Result<(), AcsError> {
        if records.is_empty() {
            return Ok(());
        }
        let index = self.next_batch;
        self.next_batch += 1;
        let file = format!("batch-{index:06}.parquet");
        let path = self.journal.dir().join(&file);
        fault::check_write(&path)?;
        write_shard(&path, &records)?;
        fault::point("batch-spooled");
        let pair_ids: Vec<String> = records.iter().map(|r| r.pair_id.clone()).collect();
        self.journal.append(&Entry::Batch {
            index,
            file,
            pair_ids: pair_ids.clone(),
        })?;
        self.spooled.push(Spooled {
            file: path,
            pair_ids,
        });
        for record in records {
            self.push(record)?;
        }
        Ok(())
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
        if !acs_schema::is_split_name(split) {
            return Err(AcsError::integrity(format!(
                "split `{split}` is not a valid split name (letters, digits, _)"
            )));
        }
        let relative = format!("data/{split}-{:05}.parquet", buffer.next_index);
        let plan_positions = match &self.plan_positions {
            None => Vec::new(),
            Some(positions) => buffer
                .rows
                .iter()
                .map(|r| {
                    positions.get(&r.pair_id).copied().ok_or_else(|| {
                        AcsError::integrity(format!(
                            "{relative}: pair {} is not in this worker's plan",
                            r.pair_id
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let path = self.root.join(&relative);
        fault::check_write(&path)?;
        let facts = write_shard(&path, &buffer.rows)?;
        fault::point("shard-written");
        let pair_ids: Vec<String> = buffer.rows.iter().map(|r| r.pair_id.clone()).collect();
        let valid = buffer.rows.iter().filter(|r| r.valid).count() as u64;
        let kernel_paths: Vec<String> = buffer
            .rows
            .iter()
            .filter_map(|r| r.kernel_path.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.journal.append(&Entry::Shard {
            path: relative.clone(),
            pair_ids: pair_ids.clone(),
            valid_rows: valid,
        })?;
        fault::point("shard-journaled");
        buffer.next_index += 1;
        buffer.rows.clear();
        buffer.bytes = 0;
        self.manifest.shards.push(ShardEntry {
            path: relative.clone(),
            split: split.to_owned(),
            rows: facts.rows,
            bytes: facts.bytes,
            sha256: facts.sha256,
            kernel_paths,
            plan_positions,
        });
        self.manifest.collect_kernel_paths();
        fault::check_write(&self.root.join(acs_schema::MANIFEST_FILE))?;
        self.manifest.save(&self.root)?;
        fault::point("manifest-saved");
        self.rows += facts.rows;
        self.valid_rows += valid;
        self.upload(&relative)?;
        self.shard_valid.insert(relative, valid);
        self.done.extend(pair_ids);
        self.drop_finished_spool();
        Ok(())
    }

    /// With a remote output: uploads the finished local shard `relative`, journals it and
    /// removes the local copy.
    pub(super) fn upload(&mut self, relative: &str) -> Result<(), AcsError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        remote.upload_shard(&self.root, relative)?;
        self.journal.append(&Entry::Uploaded {
            path: relative.to_owned(),
        })?;
        fault::point("shard-uploaded");
        let path = self.root.join(relative);
        std::fs::remove_file(&path).map_err(|e| AcsError::io(&path, e))
    }

    /// Deletes spool files whose rows are all in finished shards.
    fn drop_finished_spool(&mut self) {
        let done = &self.done;
        self.spooled.retain(|spooled| {
            if spooled.pair_ids.iter().all(|id| done.contains(id)) {
                let _ = std::fs::remove_file(&spooled.file);
                false
            } else {
                true
            }
        });
    }

    /// Removes what the sink created when nothing durable was written yet (a build that failed
    /// before producing anything leaves no trace); otherwise keeps everything for a resume.
    pub fn discard_if_empty(self) {
        if self.holds_work() {
            return;
        }
        let _ = Journal::remove(&self.root);
        let _ = std::fs::remove_file(self.root.join(acs_schema::MANIFEST_FILE));
        let _ = std::fs::remove_dir(self.root.join("data"));
        if self.created_root {
            let _ = std::fs::remove_dir(&self.root);
        }
    }

    /// Whether anything durable (a shard or a spooled batch) was written.
    pub fn holds_work(&self) -> bool {
        !self.manifest.shards.is_empty() || !self.spooled.is_empty()
    }

    /// Valid rows in the finished shards.
    pub fn valid_rows(&self) -> u64 {
        self.valid_rows
    }

    /// Writes the remaining rows, renames every shard to `{split}-{i:05d}-of-{n:05d}.parquet`,
    /// writes the dataset card made by `card` (given the manifest and the number of valid
    /// rows), and marks the manifest complete (last, so a complete manifest always describes
    /// finished files). The rename plan is journaled first, so a kill during the renames is
    /// completed by the next run.
    pub fn finish(
        mut self,
        card: impl FnOnce(&DatasetManifest, u64) -> String,
    ) -> Result<DatasetManifest, AcsError> {
        if self.pending_finish.is_none() {
            let splits: Vec<String> = self.buffers.keys().cloned().collect();
            for split in &splits {
                self.flush(split)?;
            }
        }
        let mut per_split: BTreeMap<String, usize> = BTreeMap::new();
        for shard in &self.manifest.shards {
            *per_split.entry(shard.split.clone()).or_insert(0) += 1;
        }
        let mut shards = std::mem::take(&mut self.manifest.shards);
        shards.sort_by(|a, b| a.split.cmp(&b.split).then(a.path.cmp(&b.path)));
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut renames = Vec::with_capacity(shards.len());
        for shard in &shards {
            let i = index.entry(shard.split.clone()).or_insert(0);
            renames.push((
                shard.path.clone(),
                shard_path(&shard.split, *i, per_split[&shard.split]),
            ));
            *i += 1;
        }
        if self.pending_finish.is_none() {
            self.journal.append(&Entry::Finishing {
                renames: renames.clone(),
            })?;
        }
        for (shard, (from, to)) in shards.iter_mut().zip(&renames) {
            let (from_path, to_path) = (self.root.join(from), self.root.join(to));
            if let Some(remote) = &self.remote {
                remote.copy_staged(from, to)?;
                fault::point("shard-renamed");
            } else if from_path.is_file() {
                std::fs::rename(&from_path, &to_path).map_err(|e| AcsError::io(&to_path, e))?;
                fault::point("shard-renamed");
            } else if !to_path.is_file() {
                return Err(AcsError::integrity(format!(
                    "{}: neither {from} nor {to} exists; cannot finish the build",
                    self.root.display()
                )));
            }
            shard.path = to.clone();
        }
        self.manifest.shards = shards;
        let card_path = self.root.join("README.md");
        fault::check_write(&card_path)?;
        write_atomic(&card_path, card(&self.manifest, self.valid_rows).as_bytes())?;
        self.manifest.complete = true;
        if let Some(remote) = &self.remote {
            // The manifest last: a reader never sees a partial dataset.
            remote.publish_file(&self.root, crate::store::REJECTS_FILE)?;
            remote.publish_file(&self.root, "README.md")?;
            remote.publish(
                acs_schema::MANIFEST_FILE,
                self.manifest.to_json().as_bytes(),
            )?;
            fault::point("manifest-complete");
            finish_remote(remote, &self.root);
            return Ok(self.manifest);
        }
        fault::check_write(&self.root.join(acs_schema::MANIFEST_FILE))?;
        self.manifest.save(&self.root)?;
        fault::point("manifest-complete");
        Journal::remove(&self.root)?;
        Ok(self.manifest)
    }
}
