//! `acs validate`: integrity (hashes, footers, schema, row counts, listed and unlisted shards,
//! duplicate ids, decodable images, latent lengths) and alignment (metrics and, when the
//! detector can be loaded, NudeNet scores recomputed from the stored images and latents;
//! verdicts re-derived from the build's thresholds). With `--replay` it re-renders a sample,
//! with `--drop-invalid` it writes a new dataset of the rows that pass.

mod report;
mod row;
mod run;
mod selection;
mod shard;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use acs_schema::{DatasetLocation, DatasetManifest, PairRecord, ShardEntry};
use rayon::prelude::*;

use crate::commands::judges::{
    load_judge, recorded_clip_similarity, recorded_judges, JudgeContext, LoadedJudge,
    DEFAULT_CLIP_MODEL,
};
use crate::commands::progress::{Progress, ProgressMode};
use crate::error::{without_path, AcsError};
use crate::judge::nudenet::{locate_model, NudeNetJudge};
use crate::judge::nudenet_engine;
use crate::judge::{Judge, JudgeKind};
use crate::manifest::BuildManifest;

pub use report::{ValidationReport, VALIDATION_FILE};
pub use run::{run, ValidateOutcome, ValidateRun};

use row::{check_row, metric_diffs, RowChecks, RowResult};
use selection::SelectionCheck;
use shard::{open_shard_file, sha_mismatch, unlisted_shards};

/// What `acs validate` checks beyond integrity.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Largest fraction of invalid rows that still passes.
    pub max_invalid_fraction: f64,
    /// The NudeNet model to re-run; default: the one the build recorded, if it can be found.
    pub nudenet_model: Option<PathBuf>,
    /// Check the stored judge scores' verdicts without re-running the judges.
    pub skip_detector: bool,
    /// The Stable Diffusion model folder, where the build's safety checker was the model's.
    pub model: Option<PathBuf>,
}

/// What validation found in one listed shard, for `--drop-invalid`.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// The manifest's entry.
    pub entry: ShardEntry,
    /// Rows that can be kept: valid and free of integrity errors. Empty when the shard failed
    /// its file checks.
    pub keep: Vec<bool>,
}

/// A validation report together with the per-shard outcomes.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The report.
    pub report: ValidationReport,
    /// The dataset's manifest.
    pub manifest: DatasetManifest,
    /// The build manifest recorded in it.
    pub build: BuildManifest,
    /// One outcome per listed shard, in manifest order.
    pub shards: Vec<ShardOutcome>,
}

/// The build manifest a dataset manifest records.
pub fn recorded_build(dir: &Path, manifest: &DatasetManifest) -> Result<BuildManifest, AcsError> {
    serde_json::from_value(manifest.build_config["manifest"].clone()).map_err(|e| {
        AcsError::integrity(format!(
            "{}: build_config.manifest is not a build manifest: {e}",
            dir.join(acs_schema::MANIFEST_FILE).display()
        ))
    })
}

/// How the build's NudeNet detector can be re-run: the judge, or why only the stored scores
/// are checked.
fn load_nudenet(
    expected: &str,
    build: &BuildManifest,
    options: &ValidateOptions,
) -> Result<Result<LoadedJudge, String>, AcsError> {
    let spec = build.validation.nudenet_model.clone().unwrap_or_default();
    if !nudenet_engine::AVAILABLE && options.nudenet_model.is_none() {
        let why = nudenet_engine::BUILT_WITHOUT;
        return Ok(Err(format!("stored scores only: {why}")));
    }
    let path = match &options.nudenet_model {
        Some(path) => path.clone(),
        // A relative path was relative to the build manifest, which validate does not know:
        // try it from the working folder.
        None => match locate_model(&spec, Path::new(".")) {
            Ok(path) => path,
            Err(_) => {
                return Ok(Err(format!(
                    "stored scores only: the build's model `{spec}` is not here (pass \
                     --nudenet-model PATH to re-run it)"
                )))
            }
        },
    };
    let judge = NudeNetJudge::load(&path, &build.validation.nudenet_classes)?;
    if judge.weights_sha256() != expected {
        return Err(AcsError::input(format!(
            "{}: sha256 {} differs from the detector the build used ({expected})",
            path.display(),
            judge.weights_sha256()
        )));
    }
    Ok(Ok(LoadedJudge {
        judge: Box::new(judge),
        source: path,
        default_preprocessing: false,
    }))
}

/// How a CLIP judge of the build can be re-run (on the CPU): the judge when its weights are
/// found (the build's folder from the working folder, or a hub id in the Hugging Face cache,
/// never downloaded here) with the sha256 the build recorded, else why only the stored scores
/// are checked.
fn load_clip_judge(
    kind: JudgeKind,
    expected: &str,
    build: &BuildManifest,
    model: Option<&Path>,
) -> Result<Result<LoadedJudge, String>, AcsError> {
    let offline = crate::runtime::hub::cache::hub_cache_dir();
    let context = JudgeContext {
        base_dir: Path::new("."),
        model_dir: model,
        device: &candle_core::Device::Cpu,
        dtype: candle_core::DType::F32,
    };
    // Only what is already here: a folder from the working folder, a hub id in the cache.
    let spec = match kind {
        JudgeKind::Q16 => Some(
            build
                .validation
                .clip_model
                .clone()
                .unwrap_or(DEFAULT_CLIP_MODEL.into()),
        ),
        _ => build.validation.safety_checker.clone(),
    };
    if let Some(spec) = spec
        .as_deref()
        .filter(|s| *s != "model" && !Path::new(s).is_dir())
    {
        let cached = crate::runtime::hub::cache::valid_repo_id(spec)
            && crate::runtime::hub::cache::resolve_snapshot(&offline, spec, "main").is_ok();
        if !cached {
            return Ok(Err(format!(
                "stored scores only: `{spec}` is neither a folder here (run validate from the \
                 build manifest's folder) nor in the Hugging Face cache"
            )));
        }
    }
    let loaded = match load_judge(kind, &build.validation, &context) {
        Ok(loaded) => loaded,
        Err(err) => return Ok(Err(format!("stored scores only: {err}"))),
    };
    if loaded.judge.weights_sha256() != expected {
        return Err(AcsError::input(format!(
            "{}: sha256 {} differs from the {kind} judge the build used ({expected})",
            loaded.source.display(),
            loaded.judge.weights_sha256()
        )));
    }
    Ok(Ok(loaded))
}

/// The judges the build ran, those that can be re-run, and how each is checked (the report's
/// `detector` line: "none", "re-run (PATH)", "stored scores only: WHY"; per judge when the build
/// ran several).
fn load_judges(
    manifest: &DatasetManifest,
    build: &BuildManifest,
    options: &ValidateOptions,
) -> Result<(Vec<JudgeKind>, Vec<LoadedJudge>, String), AcsError> {
    let recorded = recorded_judges(&manifest.build_config);
    let ran: Vec<JudgeKind> = recorded.iter().map(|(kind, _)| *kind).collect();
    let mut loaded = Vec::new();
    let mut lines = Vec::new();
    for (kind, sha256) in &recorded {
        let outcome = if options.skip_detector {
            Err("stored scores only: --skip-detector".to_owned())
        } else if *kind == JudgeKind::Nudenet {
            load_nudenet(sha256, build, options)?
        } else {
            load_clip_judge(*kind, sha256, build, options.model.as_deref())?
        };
        let line = match outcome {
            Ok(judge) => {
                let line = format!("re-run ({})", judge.source.display());
                loaded.push(judge);
                line
            }
            Err(why) => why,
        };
        lines.push((*kind, line));
    }
    let description = match lines.as_slice() {
        [] => "none".to_owned(),
        [(JudgeKind::Nudenet, line)] => line.clone(),
        _ => lines
            .iter()
            .map(|(kind, line)| format!("{kind}: {line}"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Ok((ran, loaded, description))
}

/// Validates the dataset in `dir` without writing anything: the report and, per shard, which
/// rows are fit to keep. Integrity errors and invalid rows are in the report, not in the
/// `Err` case, which is kept for a dataset that cannot be opened at all.
pub fn inspect(
    dir: &Path,
    options: &ValidateOptions,
    progress: ProgressMode,
) -> Result<Inspection, AcsError> {
    let location = DatasetLocation::from_path(dir)?;
    let manifest = DatasetManifest::load_from(&location)?;
    let build = recorded_build(dir, &manifest)?;
    let (ran, judges, detector) = load_judges(&manifest, &build, options)?;
    let checks = RowChecks {
        thresholds: build.thresholds(),
        store_latents: build.output.store_latents,
        change_rule: build.output.change_rule(),
        masks: build.output.masks,
        trajectory_steps: build
            .output
            .trajectory_step_indices()
            .iter()
            .map(|&s| s as i32)
            .collect(),
        ran,
        judges: judges.iter().map(|j| j.judge.as_ref()).collect(),
        clip_similarity: recorded_clip_similarity(&manifest.build_config),
        keep_best: build.keep_best(),
    };
    let mut selection = build.keep_best().map(|(keep, _)| SelectionCheck::new(keep));
    let mut report = ValidationReport {
        dataset: dir.display().to_string(),
        shards: manifest.shards.len(),
        max_invalid_fraction: options.max_invalid_fraction,
        detector,
        ..ValidationReport::default()
    };
    if !manifest.complete {
        report.errors.push(format!(
            "{}: the build did not finish (complete = false)",
            acs_schema::MANIFEST_FILE
        ));
    }
    let listed: Vec<String> = manifest.shards.iter().map(|s| s.path.clone()).collect();
    report.errors.extend(unlisted_shards(&location, &listed));
    let progress = Progress::start(progress, "checked", "rows", 0, manifest.total_rows());
    let mut seen_ids = HashSet::new();
    let mut outcomes = Vec::with_capacity(manifest.shards.len());
    for entry in &manifest.shards {
        let keep = inspect_shard(
            &location,
            entry,
            &manifest,
            &checks,
            (&mut seen_ids, selection.as_mut()),
            &mut report,
        );
        outcomes.push(ShardOutcome {
            entry: entry.clone(),
            keep,
        });
        progress.update(report.rows, report.rows);
    }
    if let Some(selection) = selection {
        report.errors.extend(selection.errors());
    }
    report.decide();
    Ok(Inspection {
        report,
        manifest,
        build,
        shards: outcomes,
    })
}

/// Checks one listed shard and its rows into `report`; which rows are fit to keep. The shard
/// is read once, one row group at a time; its rows count in the report only when its sha256
/// matches the manifest's (until then each checked row is held without its images).
fn inspect_shard(
    dir: &DatasetLocation,
    entry: &ShardEntry,
    manifest: &DatasetManifest,
    checks: &RowChecks,
    (seen_ids, mut selection): (&mut HashSet<String>, Option<&mut SelectionCheck>),
    report: &mut ValidationReport,
) -> Vec<bool> {
    let Some(open) = open_shard_file(dir, entry, &mut report.errors) else {
        return Vec::new();
    };
    let mut reader = open.reader;
    let path = dir.name_of(&entry.path);
    let mut checked: Vec<(PairRecord, RowResult)> = Vec::new();
    let mut read_error = None;
    loop {
        match reader.next_row_group() {
            Ok(Some(records)) => {
                let first = checked.len();
                let results: Vec<RowResult> = records
                    .par_iter()
                    .enumerate()
                    .map(|(i, record)| {
                        let at = format!("{}: row {}", entry.path, first + i);
                        check_row(record, &at, checks)
                    })
                    .collect();
                checked.extend(records.into_iter().map(without_blobs).zip(results));
            }
            Ok(None) => break,
            Err(e) => {
                // Named relative to the dataset, like every other error of the report.
                let message = without_path(&e.to_string(), &path);
                read_error = Some(format!("{}: {message}", entry.path));
                break;
            }
        }
    }
    let intact = match reader.finish() {
        Ok(facts) => sha_mismatch(entry, &facts.sha256),
        Err(e) => Some(format!(
            "{}: {}",
            entry.path,
            without_path(&e.to_string(), &path)
        )),
    };
    if let Some(error) = intact.or(read_error) {
        report.errors.push(error);
        return Vec::new();
    }
    report.errors.extend(open.pending_error);
    checked
        .into_iter()
        .enumerate()
        .map(|(row, (record, result))| {
            let at = format!("{}: row {row}", entry.path);
            if let Some(selection) = selection.as_deref_mut() {
                selection.add(&record, result.rank, &at);
            }
            tally_row(&record, result, &at, entry, manifest, seen_ids, report)
        })
        .collect()
}

/// A checked row without its images, latents and trajectories (what the tally still needs is
/// small).
fn without_blobs(mut record: PairRecord) -> PairRecord {
    record.unsafe_image.bytes = Vec::new();
    record.safe_image.bytes = Vec::new();
    record.unsafe_latent = None;
    record.safe_latent = None;
    record.change_mask = None;
    record.change_mask_latent = None;
    record.blend_mask_image = None;
    record.trajectory_latents = None;
    record.trajectory_eps_unsafe = None;
    record.trajectory_eps_safe = None;
    record
}

/// Adds one checked row to the report: the dataset-level checks (split, duplicate ids, model),
/// the metric differences, and the counts. Whether the row is fit to keep.
fn tally_row(
    record: &PairRecord,
    result: RowResult,
    at: &str,
    entry: &ShardEntry,
    manifest: &DatasetManifest,
    seen_ids: &mut HashSet<String>,
    report: &mut ValidationReport,
) -> bool {
    report.rows += 1;
    let errors_before = report.errors.len();
    if record.split != entry.split {
        report.errors.push(format!(
            "{at}, column split: `{}` in a `{}` shard",
            record.split, entry.split
        ));
    }
    if !seen_ids.insert(record.pair_id.clone()) {
        report.errors.push(format!(
            "{at}, column pair_id: duplicate {}",
            record.pair_id
        ));
    }
    if record.model_sha256 != manifest.model.sha256 {
        report.errors.push(format!(
            "{at}, column model_sha256: differs from the manifest's model"
        ));
    }
    for (name, diff, tolerance) in metric_diffs(record, &result) {
        let max = report
            .metric_max_abs_diff
            .entry(name.to_owned())
            .or_insert(0.0);
        *max = max.max(diff);
        if diff > tolerance {
            report.errors.push(format!(
                "{at}, column {name}: stored value differs from the recomputed one by {diff:.3e}"
            ));
        }
    }
    report.errors.extend(result.errors);
    if record.valid {
        report.valid_rows += 1;
    } else {
        report.invalid_rows += 1;
        if crate::judge::selection::only_not_kept(record) {
            report.not_kept_rows += 1;
        }
        // Rows per reason kind: a row rejected twice for one kind counts once.
        let kinds: std::collections::BTreeSet<&str> = record
            .reject_reasons
            .iter()
            .map(|reason| reason.split(':').next().unwrap_or(reason))
            .collect();
        for kind in kinds {
            *report.reject_reasons.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    record.valid && report.errors.len() == errors_before
}

/// Validates the dataset in `dir`, writes `validation.json` beside its manifest, and returns
/// the report (see [`inspect`]).
pub fn validate(
    dir: &Path,
    options: &ValidateOptions,
    progress: ProgressMode,
) -> Result<ValidationReport, AcsError> {
    let inspection = inspect(dir, options, progress)?;
    inspection.report.write(&DatasetLocation::from_path(dir)?)?;
    Ok(inspection.report)
}
