//! `acs merge DIR... --out DIR`: joins the outputs of `acs build --worker i/n` into one
//! dataset. Every worker output must be a finished slice of the same build (same build
//! config and model fingerprint) with intact shards; slices must not overlap, and all `n` must
//! be present unless `--allow-partial`. Shards are copied (hard-linked where the file system
//! allows, copied on the server within a bucket) under their final names
//! `{split}-{i:05d}-of-{n:05d}` in worker order, so merging the same outputs twice gives
//! byte-identical datasets. Inputs and output may be local folders or object-store URLs; each
//! shard is read once, one row group at a time, hashed as it is read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use acs_schema::{
    shard_path, DatasetLocation, DatasetManifest, PairRecord, RemoteDir, ShardEntry, WorkerSlice,
};

use crate::commands::validate::recorded_build;
use crate::error::AcsError;
use crate::store::card::dataset_card;
use crate::store::REJECTS_FILE;

/// What a merge wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MergeReport {
    /// The merged dataset folder.
    pub out: String,
    /// Worker outputs merged.
    pub workers: usize,
    /// Workers of the build that were absent (only with `allow_partial`).
    pub missing_workers: Vec<u32>,
    /// Rows in the merged dataset.
    pub rows: u64,
    /// Shards in the merged dataset.
    pub shards: usize,
}

/// One worker output, checked.
struct WorkerOutput {
    dir: PathBuf,
    location: DatasetLocation,
    manifest: DatasetManifest,
    slice: WorkerSlice,
}

fn load_worker(dir: &Path) -> Result<WorkerOutput, AcsError> {
    let location = DatasetLocation::from_path(dir)?;
    let manifest = DatasetManifest::load_from(&location)?;
    let Some(slice) = manifest.worker else {
        return Err(AcsError::input(format!(
            "{}: not a worker output (built without --worker); merge joins the outputs of \
             `acs build --worker i/n`",
            dir.display()
        )));
    };
    if !manifest.complete {
        return Err(AcsError::input(format!(
            "{}: worker {slice} has not finished (rerun its `acs build` to resume it)",
            dir.display()
        )));
    }
    Ok(WorkerOutput {
        dir: PathBuf::from(location.to_string()),
        location,
        manifest,
        slice,
    })
}

/// Checks that the outputs belong to one build and cover it; returns them in worker order
/// and the missing worker numbers.
fn check_workers(
    mut workers: Vec<WorkerOutput>,
    allow_partial: bool,
) -> Result<(Vec<WorkerOutput>, Vec<u32>), AcsError> {
    let first = &workers[0];
    for other in &workers[1..] {
        let differs = |what: &str, a: &str, b: &str| {
            AcsError::input(format!(
                "{}: {what} {b} differs from {}'s {a}; all worker outputs must come from one build",
                other.dir.display(),
                first.dir.display()
            ))
        };
        if other.manifest.build_config_sha256 != first.manifest.build_config_sha256 {
            return Err(differs(
                "build config",
                &first.manifest.build_config_sha256,
                &other.manifest.build_config_sha256,
            ));
        }
        if other.manifest.model != first.manifest.model {
            return Err(differs(
                "model",
                &first.manifest.model.sha256,
                &other.manifest.model.sha256,
            ));
        }
        if other.slice.count != first.slice.count {
            return Err(differs(
                "worker count",
                &first.slice.count.to_string(),
                &other.slice.count.to_string(),
            ));
        }
    }
    workers.sort_by_key(|w| w.slice.index);
    for pair in workers.windows(2) {
        if pair[0].slice.index == pair[1].slice.index {
            return Err(AcsError::input(format!(
                "{} and {}: both hold worker {}; the outputs overlap",
                pair[0].dir.display(),
                pair[1].dir.display(),
                pair[0].slice
            )));
        }
    }
    let count = workers[0].slice.count;
    let present: Vec<u32> = workers.iter().map(|w| w.slice.index).collect();
    let missing: Vec<u32> = (0..count).filter(|i| !present.contains(i)).collect();
    if !missing.is_empty() && !allow_partial {
        let names: Vec<String> = missing.iter().map(|i| format!("{i}/{count}")).collect();
        return Err(AcsError::input(format!(
            "missing worker outputs: {} (merge them too, or pass --allow-partial)",
            names.join(", ")
        )));
    }
    Ok((workers, missing))
}

/// Hard-links `from` to `to`, or copies it where links are not possible.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), AcsError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| AcsError::io(to, e))
}

/// The shards of every split, in worker order, each with the worker it comes from.
type ShardsBySplit<'w> = BTreeMap<String, Vec<(&'w WorkerOutput, &'w ShardEntry)>>;

/// Merges worker outputs `dirs` into the new folder `out` (a local folder or an object-store
/// URL; either way the output appears only once complete).
pub fn merge(dirs: &[PathBuf], out: &Path, allow_partial: bool) -> Result<MergeReport, AcsError> {
    if dirs.is_empty() {
        return Err(AcsError::input("merge: name at least one worker output"));
    }
    let target = DatasetLocation::from_path(out)?;
    match &target {
        DatasetLocation::Local(out) => crate::store::staging::check_new_folder(out)?,
        DatasetLocation::Remote(dir) => check_empty_prefix(dir)?,
    }
    let workers = dirs
        .iter()
        .map(|d| load_worker(d))
        .collect::<Result<Vec<_>, _>>()?;
    let (workers, missing) = check_workers(workers, allow_partial)?;
    let build = recorded_build(&workers[0].dir, &workers[0].manifest)?;
    // Check every shard and collect pair ids before writing anything.
    let (per_split, valid_rows) = check_shards(&workers)?;
    let rejects = workers[0].location.read(REJECTS_FILE)?.ok_or_else(|| {
        AcsError::integrity(format!(
            "{}: missing",
            workers[0].location.name_of(REJECTS_FILE).display()
        ))
    })?;
    let write = |into: &DatasetLocation| -> Result<MergeReport, AcsError> {
        let mut manifest = DatasetManifest {
            shards: copy_shards(&per_split, into)?,
            worker: None,
            complete: true,
            ..workers[0].manifest.clone()
        };
        manifest.collect_kernel_paths();
        into.write(REJECTS_FILE, &rejects)?;
        let mut card = dataset_card(&manifest, &build, valid_rows);
        card.push_str(&provenance(&workers, &missing));
        into.write("README.md", card.as_bytes())?;
        // The manifest last: a reader never sees a partial dataset.
        into.write(acs_schema::MANIFEST_FILE, manifest.to_json().as_bytes())?;
        Ok(MergeReport {
            out: target.to_string(),
            workers: workers.len(),
            missing_workers: missing.clone(),
            rows: manifest.total_rows(),
            shards: manifest.shards.len(),
        })
    };
    match &target {
        DatasetLocation::Local(out) => crate::store::staging::write_new_folder(out, |staging| {
            write(&DatasetLocation::Local(staging.to_path_buf()))
        }),
        DatasetLocation::Remote(dir) => write(&target).inspect_err(|_| {
            // Nothing half-written: remove what was copied.
            let _ = dir.delete_all();
        }),
    }
}

/// Refuses an object-store `--out` that holds anything (the listing also proves the bucket and
/// the credentials).
fn check_empty_prefix(dir: &RemoteDir) -> Result<(), AcsError> {
    match dir.list()?.first() {
        None => Ok(()),
        Some((name, _)) => Err(AcsError::input(format!(
            "{dir}: --out is not empty (it holds {name}); choose a new prefix"
        ))),
    }
}

/// Checks every shard of every worker (path, split name, sha256, that its pairs belong to
/// the worker and to no other shard); the shards by split and the valid rows.
fn check_shards(workers: &[WorkerOutput]) -> Result<(ShardsBySplit<'_>, u64), AcsError> {
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut per_split: ShardsBySplit = BTreeMap::new();
    let mut valid_rows = 0u64;
    for worker in workers {
        for shard in &worker.manifest.shards {
            acs_schema::check_relative(&shard.path).map_err(|why| {
                AcsError::integrity(format!("{}: shard path {why}", worker.dir.display()))
            })?;
            if !acs_schema::is_split_name(&shard.split) {
                return Err(AcsError::integrity(format!(
                    "{}: {}: split `{}` is not a valid split name (letters, digits, _)",
                    worker.dir.display(),
                    shard.path,
                    shard.split
                )));
            }
            let path = worker.location.name_of(&shard.path);
            let name = path.display().to_string();
            read_verified(&worker.location, shard, |records| {
                for record in records {
                    if !worker.slice.owns(&record.pair_id) {
                        return Err(AcsError::integrity(format!(
                            "{name}: pair {} does not belong to worker {}",
                            record.pair_id, worker.slice
                        )));
                    }
                    if let Some(previous) = owner.insert(record.pair_id.clone(), name.clone()) {
                        return Err(AcsError::integrity(format!(
                            "{name}: pair {} is also in {previous}; the outputs overlap",
                            record.pair_id
                        )));
                    }
                    valid_rows += u64::from(record.valid);
                }
                Ok(())
            })?;
            per_split
                .entry(shard.split.clone())
                .or_default()
                .push((worker, shard));
        }
    }
    Ok((per_split, valid_rows))
}

/// Reads the shard of `entry` once, one row group at a time, handing each group's rows to
/// `check`; a file whose sha256 differs from the manifest's is reported as such (before any
/// error of its rows, which a damaged file explains).
fn read_verified(
    dir: &DatasetLocation,
    entry: &ShardEntry,
    mut check: impl FnMut(Vec<PairRecord>) -> Result<(), AcsError>,
) -> Result<(), AcsError> {
    let path = dir.name_of(&entry.path);
    let mismatch = |sha: &str| {
        AcsError::integrity(format!(
            "{}: sha256 mismatch (manifest {}, file {sha})",
            path.display(),
            entry.sha256
        ))
    };
    let mut reader = match dir.open_shard(&entry.path) {
        Ok(reader) => reader,
        Err(err) => {
            return match dir.sha256(&entry.path) {
                Ok(sha) if sha != entry.sha256 => Err(mismatch(&sha)),
                _ => Err(err.into()),
            }
        }
    };
    let mut failure = None;
    loop {
        match reader.next_row_group() {
            Ok(Some(records)) => {
                if let Err(err) = check(records) {
                    failure = Some(err);
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                failure = Some(err.into());
                break;
            }
        }
    }
    let facts = reader.finish()?;
    if facts.sha256 != entry.sha256 {
        return Err(mismatch(&facts.sha256));
    }
    failure.map_or(Ok(()), Err)
}

/// Puts the shards into `into/data` under their final names: hard links or copies between
/// local folders, server-side copies within a bucket, uploads and downloads in between.
fn copy_shards(
    per_split: &ShardsBySplit,
    into: &DatasetLocation,
) -> Result<Vec<ShardEntry>, AcsError> {
    if let DatasetLocation::Local(staging) = into {
        std::fs::create_dir_all(staging.join("data")).map_err(|e| AcsError::io(staging, e))?;
    }
    let mut shards = Vec::new();
    for (split, entries) in per_split {
        for (i, (worker, shard)) in entries.iter().enumerate() {
            let name = shard_path(split, i, entries.len());
            match (&worker.location, into) {
                (DatasetLocation::Local(from), DatasetLocation::Local(to)) => {
                    link_or_copy(&from.join(&shard.path), &to.join(&name))?
                }
                (DatasetLocation::Remote(from), DatasetLocation::Remote(to)) => {
                    from.copy_to(&shard.path, to, &name)?
                }
                (DatasetLocation::Remote(from), DatasetLocation::Local(to)) => {
                    from.download(&shard.path, &to.join(&name)).map(drop)?
                }
                (DatasetLocation::Local(from), DatasetLocation::Remote(to)) => {
                    to.upload_file(&from.join(&shard.path), &name, &mut |_| {})?
                }
            }
            shards.push(ShardEntry {
                path: name,
                ..(*shard).clone()
            });
        }
    }
    Ok(shards)
}

/// The dataset card's provenance section of a merge.
fn provenance(workers: &[WorkerOutput], missing: &[u32]) -> String {
    let partial = if missing.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
        format!(
            "; workers {} are missing, so this is a partial dataset",
            names.join(", ")
        )
    };
    format!(
        "\n## Provenance\n\nMerged by `acs merge` from {} worker outputs of {}{partial}.\n",
        workers.len(),
        workers[0].slice.count,
    )
}

impl std::fmt::Display for MergeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partial = if self.missing_workers.is_empty() {
            String::new()
        } else {
            format!(" (partial: workers {:?} missing)", self.missing_workers)
        };
        writeln!(
            f,
            "merged {} worker outputs into {}: {} rows in {} shards{partial}",
            self.workers, self.out, self.rows, self.shards
        )
    }
}
