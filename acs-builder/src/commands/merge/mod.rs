//! `acs merge DIR... --out DIR`: joins the outputs of `acs build --worker i/n` into one
//! dataset. Every worker output must be a finished slice of the same build (same build
//! config and model fingerprint) with intact shards; slices must not overlap, and all `n` must
//! be present unless `--allow-partial`. The rows are written again, in the order of the build's
//! plan that each worker records ([`order`]), by the build's own shard sink: a complete merge is
//! byte for byte the dataset a one-process build of the same manifest writes (shards, manifest,
//! card, rejects). Inputs and output may be local folders or object-store URLs; each shard is
//! read once, one row group at a time, hashed as it is read, and the output appears only once
//! complete.

mod order;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use acs_schema::{
    write_atomic, DatasetLocation, DatasetManifest, RemoteDir, ShardEntry, WorkerSlice,
};

use crate::commands::validate::recorded_build;
use crate::error::AcsError;
use crate::manifest::{parse_byte_size, BuildManifest};
use crate::prompts::plan::prompt_group_id;
use crate::store::card::dataset_card;
use crate::store::publish::{remove_work_dir, Publisher};
use crate::store::sink::ShardSink;
use crate::store::REJECTS_FILE;
use order::ShardRun;

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
    /// Whether the rows are in the build's plan order; worker outputs written before acs
    /// recorded plan positions are merged worker after worker.
    pub plan_order: bool,
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
    let per_split = shard_runs(&workers)?;
    let positions = order::has_plan_positions(per_split.values().flatten())?;
    let rejects = workers[0].location.read(REJECTS_FILE)?.ok_or_else(|| {
        AcsError::integrity(format!(
            "{}: missing",
            workers[0].location.name_of(REJECTS_FILE).display()
        ))
    })?;
    let shard_rows = build.output.shard_rows as usize;
    let shard_bytes = parse_byte_size(&build.output.shard_bytes).unwrap_or(u64::MAX);
    let template = DatasetManifest {
        worker: None,
        ..workers[0].manifest.clone()
    };
    let merged = Merged {
        workers: &workers,
        build: &build,
        missing: &missing,
    };
    let fill = |root: &Path, publisher: Option<Publisher>| -> Result<DatasetManifest, AcsError> {
        let mut sink = ShardSink::create(root, template.clone(), shard_rows, shard_bytes)?;
        write_atomic(&root.join(REJECTS_FILE), &rejects)?;
        if let Some(publisher) = publisher {
            sink = sink.publishing_to(publisher);
        }
        merged.write_rows(&per_split, positions, &mut sink)?;
        sink.finish(|manifest, valid_rows| merged.card(manifest, valid_rows))
    };
    let manifest = match &target {
        DatasetLocation::Local(out) => {
            crate::store::staging::write_new_folder(out, |staging| fill(staging, None))?
        }
        DatasetLocation::Remote(dir) => {
            let work = merge_work_dir(dir);
            remove_work_dir(&work)?;
            fill(&work, Some(Publisher::new(dir.clone()))).inspect_err(|_| {
                // Nothing half-written: remove what was uploaded, and the work folder.
                let _ = dir.delete_all();
                let _ = remove_work_dir(&work);
            })?
        }
    };
    Ok(MergeReport {
        out: target.to_string(),
        workers: workers.len(),
        missing_workers: missing,
        rows: manifest.total_rows(),
        shards: manifest.shards.len(),
        plan_order: positions,
    })
}

/// The local work folder of a merge into a bucket: under `$ACS_HOME/journals/`, apart from
/// the folder of a build into the same URL.
fn merge_work_dir(dir: &RemoteDir) -> PathBuf {
    crate::store::publish::default_work_dir(&format!("merge {}", dir.url()))
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

/// Checks every shard entry of every worker (path, split name) and groups them by split,
/// each worker's shards one run, in worker order.
fn shard_runs(workers: &[WorkerOutput]) -> Result<BTreeMap<String, Vec<ShardRun<'_>>>, AcsError> {
    let mut per_split: BTreeMap<String, Vec<ShardRun>> = BTreeMap::new();
    for (index, worker) in workers.iter().enumerate() {
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
            let runs = per_split.entry(shard.split.clone()).or_default();
            match runs.last_mut() {
                Some(run) if run.worker == index => run.shards.push(shard),
                _ => runs.push(ShardRun {
                    worker: index,
                    location: &worker.location,
                    shards: vec![shard],
                }),
            }
        }
    }
    Ok(per_split)
}

/// What the merged dataset is made of.
struct Merged<'a> {
    workers: &'a [WorkerOutput],
    build: &'a BuildManifest,
    missing: &'a [u32],
}

impl Merged<'_> {
    /// Puts every row into `sink`, split after split, in plan order, checking that each pair
    /// belongs to its worker and to no other shard.
    fn write_rows<'w>(
        &self,
        per_split: &'w BTreeMap<String, Vec<ShardRun<'w>>>,
        positions: bool,
        sink: &mut ShardSink,
    ) -> Result<(), AcsError> {
        // keep_best builds deal out whole prompt pairs.
        let grouped = self.build.keep_best().is_some();
        // Pair id -> the shard that holds it (named only in an error).
        let mut owner: HashMap<String, (&DatasetLocation, &ShardEntry)> = HashMap::new();
        let name = |location: &DatasetLocation, shard: &ShardEntry| {
            location.name_of(&shard.path).display().to_string()
        };
        for runs in per_split.values() {
            order::in_plan_order(runs, positions, |record, run, shard| {
                let worker = &self.workers[run.worker];
                let key = if grouped {
                    prompt_group_id(&record.category, &record.unsafe_prompt, &record.safe_prompt)
                } else {
                    record.pair_id.clone()
                };
                if !worker.slice.owns(&key) {
                    return Err(AcsError::integrity(format!(
                        "{}: pair {} does not belong to worker {}",
                        name(run.location, shard),
                        record.pair_id,
                        worker.slice
                    )));
                }
                if let Some((location, previous)) =
                    owner.insert(record.pair_id.clone(), (run.location, shard))
                {
                    return Err(AcsError::integrity(format!(
                        "{}: pair {} is also in {}; the outputs overlap",
                        name(run.location, shard),
                        record.pair_id,
                        name(location, previous)
                    )));
                }
                sink.push(record)
            })?;
        }
        Ok(())
    }

    /// The card of a one-process build; a partial merge adds where it came from.
    fn card(&self, manifest: &DatasetManifest, valid_rows: u64) -> String {
        let mut card = dataset_card(manifest, self.build, valid_rows);
        if !self.missing.is_empty() {
            card.push_str(&provenance(self.workers, self.missing));
        }
        card
    }
}

/// The dataset card's provenance section of a partial merge.
fn provenance(workers: &[WorkerOutput], missing: &[u32]) -> String {
    let names: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
    format!(
        "\n## Provenance\n\nMerged by `acs merge` from {} worker outputs of {}; workers {} are \
         missing, so this is a partial dataset.\n",
        workers.len(),
        workers[0].slice.count,
        names.join(", ")
    )
}

impl std::fmt::Display for MergeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partial = if self.missing_workers.is_empty() {
            String::new()
        } else {
            format!(" (partial: workers {:?} missing)", self.missing_workers)
        };
        let order = if self.plan_order {
            ""
        } else {
            " (worker after worker: these outputs record no plan positions)"
        };
        writeln!(
            f,
            "merged {} worker outputs into {}: {} rows in {} shards{partial}{order}",
            self.workers, self.out, self.rows, self.shards
        )
    }
}
