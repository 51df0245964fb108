//! Resuming an unfinished build: the journal says which shards and spooled batches the killed
//! run left; listed shards are kept, spooled rows that no listed shard holds go back into the
//! buffers in their original order (so shards are cut where an uninterrupted build cuts them),
//! and only pairs found nowhere are rendered again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use acs_schema::{read_shard, DatasetManifest, PairRecord};

use crate::error::AcsError;
use crate::store::journal::{Entry, Journal};
use crate::store::publish::Publisher;
use crate::store::sink::{remove_temp_files, Resumed, ShardSink, Spooled};

/// What the journal of a killed build holds.
#[derive(Default)]
struct JournalState {
    /// Listed shard path -> (its pair ids, its valid rows).
    shards: HashMap<String, (Vec<String>, u64)>,
    /// Spooled batches: (index, file, pair ids), in order.
    batches: Vec<(u64, String, Vec<String>)>,
    /// The rename plan of an interrupted finish.
    pending_finish: Option<Vec<(String, String)>>,
    /// Shards uploaded to the staging area of a remote output.
    uploaded: HashSet<String>,
}

impl JournalState {
    fn read(root: &Path) -> Result<Self, AcsError> {
        let mut state = Self::default();
        for entry in Journal::read(root)? {
            match entry {
                Entry::Shard {
                    path,
                    pair_ids,
                    valid_rows,
                } => {
                    state.shards.insert(path, (pair_ids, valid_rows));
                }
                Entry::Batch {
                    index,
                    file,
                    pair_ids,
                } => state.batches.push((index, file, pair_ids)),
                Entry::Finishing { renames } => state.pending_finish = Some(renames),
                Entry::Uploaded { path } => {
                    state.uploaded.insert(path);
                }
            }
        }
        Ok(state)
    }
}

impl ShardSink {
    /// Reopens the unfinished build in `root` whose manifest is `manifest`: keeps the listed
    /// shards, puts the spooled rows that no listed shard holds back into the buffers, and
    /// reports which pairs need no rendering. With `remote`, `root` is the build's local work
    /// folder and finished shards are in (or go to) the remote staging area. A worker's
    /// `plan_positions` are recorded in the shards it writes from now on
    /// ([`ShardSink::recording_plan_positions`]).
    pub fn resume(
        root: &Path,
        manifest: DatasetManifest,
        shard_rows: usize,
        shard_bytes: u64,
        remote: Option<Publisher>,
        plan_positions: Option<HashMap<String, u64>>,
    ) -> Result<(Self, Resumed), AcsError> {
        let state = JournalState::read(root)?;
        let journal = Journal::open(root)?;
        for dir in [
            root.to_path_buf(),
            root.join("data"),
            journal.dir().to_path_buf(),
        ] {
            remove_temp_files(&dir);
        }
        let mut sink = Self {
            root: root.to_path_buf(),
            created_root: false,
            manifest,
            shard_rows: shard_rows.max(1),
            shard_bytes: shard_bytes.max(1),
            buffers: BTreeMap::new(),
            journal,
            next_batch: state.batches.iter().map(|b| b.0 + 1).max().unwrap_or(0),
            done: HashSet::new(),
            spooled: Vec::new(),
            rows: 0,
            valid_rows: 0,
            shard_valid: HashMap::new(),
            pending_finish: state.pending_finish.clone(),
            remote,
            plan_positions,
        };
        sink.adopt_listed_shards(&state)?;
        let mut resumed = Resumed {
            rendered: sink.done.clone(),
            rows: sink.rows,
        };
        if sink.pending_finish.is_none() {
            sink.respool(state.batches, &mut resumed)?;
        }
        Ok((sink, resumed))
    }

    /// Takes over the shards the manifest lists: each must be in the journal and on disk
    /// (under its name, or under its final name when a finish was interrupted).
    fn adopt_listed_shards(&mut self, state: &JournalState) -> Result<(), AcsError> {
        let renamed: HashMap<&str, &str> = state
            .pending_finish
            .iter()
            .flatten()
            .map(|(from, to)| (from.as_str(), to.as_str()))
            .collect();
        for shard in self.manifest.shards.clone() {
            let shard = &shard;
            let Some((ids, valid)) = state.shards.get(&shard.path) else {
                return Err(AcsError::integrity(format!(
                    "{}: {} is listed in the manifest but not in the build journal; \
                     cannot resume (choose an empty folder)",
                    self.root.display(),
                    shard.path
                )));
            };
            let on_disk = [
                Some(shard.path.as_str()),
                renamed.get(shard.path.as_str()).copied(),
            ]
            .into_iter()
            .flatten()
            .any(|p| self.root.join(p).is_file());
            let present = match &self.remote {
                Some(remote) => self.adopt_remote_shard(remote.clone(), shard, state, on_disk)?,
                None => on_disk,
            };
            if !present {
                return Err(AcsError::integrity(format!(
                    "{}: shard {} of the unfinished build is missing; cannot resume \
                     (choose an empty folder)",
                    self.root.display(),
                    shard.path
                )));
            }
            self.done.extend(ids.iter().cloned());
            self.rows += shard.rows;
            self.valid_rows += valid;
            self.shard_valid.insert(shard.path.clone(), *valid);
            self.buffers
                .entry(shard.split.clone())
                .or_default()
                .next_index += 1;
        }
        Ok(())
    }

    /// Whether a listed shard of a remote build is there: uploaded (its staged object has the
    /// recorded size), or still local, in which case it is uploaded now.
    fn adopt_remote_shard(
        &mut self,
        remote: Publisher,
        shard: &acs_schema::ShardEntry,
        state: &JournalState,
        on_disk: bool,
    ) -> Result<bool, AcsError> {
        if state.uploaded.contains(&shard.path) {
            if state.pending_finish.is_some() {
                return Ok(true); // the finish checks each copy
            }
            return match remote.staged_size(&shard.path)? {
                Some(size) if size == shard.bytes => {
                    let _ = std::fs::remove_file(self.root.join(&shard.path));
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        if !on_disk {
            return Ok(false);
        }
        self.upload(&shard.path)?;
        Ok(true)
    }

    /// Puts the rows of the journaled spool files that no finished shard holds back into the
    /// buffers, in order; spool files that were never journaled are deleted (rendered again).
    fn respool(
        &mut self,
        batches: Vec<(u64, String, Vec<String>)>,
        resumed: &mut Resumed,
    ) -> Result<(), AcsError> {
        let journaled: HashSet<&str> = batches.iter().map(|b| b.1.as_str()).collect();
        if let Ok(listing) = std::fs::read_dir(self.journal.dir()) {
            for entry in listing.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("batch-") && !journaled.contains(name.as_str()) {
                    // Spooled but never logged (killed in between): render it again.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for (_, file, pair_ids) in batches {
            let path = self.journal.dir().join(&file);
            if !path.is_file() {
                continue; // every row of it went into finished shards
            }
            let fresh: Vec<PairRecord> = read_shard(&path)?
                .into_iter()
                .filter(|r| !self.done.contains(&r.pair_id))
                .collect();
            for record in &fresh {
                if resumed.rendered.insert(record.pair_id.clone()) {
                    resumed.rows += 1;
                }
            }
            self.spooled.push(Spooled {
                file: path,
                pair_ids,
            });
            for record in fresh {
                self.push(record)?;
            }
        }
        Ok(())
    }
}
