//! `acs validate`: integrity (hashes, footers, schema, row counts, listed and unlisted shards,
//! duplicate ids, decodable images, latent lengths) and alignment (metrics and, when the
//! detector can be loaded, NudeNet scores recomputed from the stored images and latents;
//! verdicts re-derived from the build's thresholds).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use acs_schema::{
    read_shard, read_shard_footer, write_atomic, DatasetManifest, PairRecord, ShardEntry,
};
use rayon::prelude::*;
use serde::Serialize;

use crate::align::token_edit_violations;
use crate::config::BuildManifest;
use crate::error::AcsError;
use crate::imaging::{decode_png, f32_from_f16_le};
use crate::metrics::{pair_metrics, PairMetrics};
use crate::nudenet::{locate_model, SafetyScorer};
use crate::verdict::{
    flip_violations, is_metric_reason, metric_violations, SafetyScores, Thresholds,
};

/// Name of the report written beside the manifest.
pub const VALIDATION_FILE: &str = "validation.json";

/// Largest accepted difference between a stored metric and its recomputed value.
const METRIC_TOLERANCE: f64 = 1e-4;

/// Largest accepted difference between a stored NudeNet score and its recomputed value (the
/// detector's float arithmetic may differ across CPUs).
const DETECTOR_TOLERANCE: f64 = 1e-3;

/// What `acs validate` checks beyond integrity.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Largest fraction of invalid rows that still passes.
    pub max_invalid_fraction: f64,
    /// The NudeNet model to re-run; default: the one the build recorded, if it can be found.
    pub nudenet_model: Option<PathBuf>,
    /// Check the stored NudeNet scores' verdicts without re-running the detector.
    pub skip_detector: bool,
}

/// The outcome of validating a dataset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidationReport {
    /// The dataset folder.
    pub dataset: String,
    /// No integrity error and the invalid fraction is within bounds.
    pub passed: bool,
    /// Shards listed in the manifest.
    pub shards: usize,
    /// Rows read.
    pub rows: u64,
    /// Rows that pass the build's thresholds.
    pub valid_rows: u64,
    /// Rows that do not.
    pub invalid_rows: u64,
    /// How often each reject reason (its prefix before ':') occurs.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Largest |stored - recomputed| over all rows for each metric.
    pub metric_max_abs_diff: BTreeMap<String, f64>,
    /// Integrity errors, each naming the file (and row) and the reason.
    pub errors: Vec<String>,
    /// The largest invalid fraction allowed.
    pub max_invalid_fraction: f64,
    /// How the NudeNet scores were checked: "none" (the build had no detector), "re-run", or
    /// "stored scores only: <why>".
    pub detector: String,
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

/// What every row of a dataset is checked against.
struct RowChecks<'a> {
    thresholds: Thresholds,
    store_latents: bool,
    /// The build scored images with a detector (the nudenet columns must be set).
    has_detector: bool,
    /// The detector to re-run, when it could be loaded.
    scorer: Option<&'a SafetyScorer>,
}

/// What checking one row found.
#[derive(Default)]
struct RowResult {
    errors: Vec<String>,
    metrics: Option<PairMetrics>,
    /// Recomputed detector scores (when the detector was re-run).
    scores: Option<SafetyScores>,
}

/// Checks one row.
fn check_row(record: &PairRecord, at: &str, checks: &RowChecks) -> RowResult {
    let thresholds = &checks.thresholds;
    let store_latents = checks.store_latents;
    let mut errors = Vec::new();
    let (w, h) = (record.width.max(0) as u32, record.height.max(0) as u32);
    let mut images = Vec::new();
    for (name, blob) in [
        ("unsafe_image", &record.unsafe_image),
        ("safe_image", &record.safe_image),
    ] {
        match decode_png(&blob.bytes) {
            Ok((rgb, iw, ih)) if (iw, ih) == (w, h) => images.push(rgb),
            Ok((_, iw, ih)) => errors.push(format!(
                "{at}, column {name}: image is {iw}x{ih}, row says {w}x{h}"
            )),
            Err(e) => errors.push(format!("{at}, column {name}: {e}")),
        }
    }
    let expected_latent_bytes: usize = record
        .latent_shape
        .iter()
        .map(|&d| d.max(0) as usize)
        .product::<usize>()
        * 2;
    let mut latents = Vec::new();
    for (name, latent) in [
        ("unsafe_latent", &record.unsafe_latent),
        ("safe_latent", &record.safe_latent),
    ] {
        match latent {
            Some(bytes) if bytes.len() == expected_latent_bytes => {
                latents.push(f32_from_f16_le(bytes).unwrap_or_default())
            }
            Some(bytes) => errors.push(format!(
                "{at}, column {name}: {} bytes, latent_shape {:?} needs {expected_latent_bytes}",
                bytes.len(),
                record.latent_shape
            )),
            None if store_latents => errors.push(format!(
                "{at}, column {name}: missing although the build stores latents"
            )),
            None => {}
        }
    }
    let stored_scores = SafetyScores {
        unsafe_score: record.nudenet_unsafe,
        safe_score: record.nudenet_safe,
    };
    for (name, score) in [
        ("nudenet_unsafe", record.nudenet_unsafe),
        ("nudenet_safe", record.nudenet_safe),
    ] {
        match (checks.has_detector, score) {
            (true, None) => errors.push(format!(
                "{at}, column {name}: null although the build ran the detector"
            )),
            (false, Some(_)) => errors.push(format!(
                "{at}, column {name}: set although the build ran no detector"
            )),
            _ => {}
        }
    }
    if images.len() != 2 {
        return RowResult {
            errors,
            ..RowResult::default()
        };
    }
    let mut recomputed_scores = None;
    if let Some(scorer) = checks.scorer {
        let score = |rgb: &[u8]| scorer.score(rgb, w as usize, h as usize);
        match (score(&images[0]), score(&images[1])) {
            (Ok(u), Ok(s)) => {
                recomputed_scores = Some(SafetyScores {
                    unsafe_score: Some(u),
                    safe_score: Some(s),
                })
            }
            (Err(e), _) | (_, Err(e)) => errors.push(format!("{at}: detector: {e}")),
        }
    }
    let (unsafe_latent, safe_latent) = match latents.as_slice() {
        [u, s] => (u.as_slice(), s.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let mut metrics = pair_metrics(
        &images[0],
        &images[1],
        w as usize,
        h as usize,
        unsafe_latent,
        safe_latent,
    );
    if latents.len() != 2 {
        metrics.latent_cosine = record.latent_cosine;
    }
    let mut expected: Vec<String> = record
        .reject_reasons
        .iter()
        .filter(|r| r.starts_with("truncated: "))
        .cloned()
        .collect();
    expected.extend(token_edit_violations(
        record.token_edit_distance.max(0) as u32,
        thresholds.max_token_edits,
    ));
    expected.extend(metric_violations(&metrics, thresholds));
    expected.extend(flip_violations(
        recomputed_scores.as_ref().unwrap_or(&stored_scores),
        thresholds,
    ));
    let stored_box = metrics.changed_box.map(crate::metrics::ChangedBox::to_vec);
    if record.changed_box != stored_box {
        errors.push(format!(
            "{at}, column changed_box: stored {:?}, recomputed {:?}",
            record.changed_box, stored_box
        ));
    }
    let stored_metric_reasons = record
        .reject_reasons
        .iter()
        .filter(|r| is_metric_reason(r))
        .count();
    let recomputed_metric_reasons = expected.iter().filter(|r| is_metric_reason(r)).count();
    let same_kinds = |a: &[String], b: &[String]| {
        let kinds = |v: &[String]| {
            v.iter()
                .map(|r| r.split(':').next().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        };
        kinds(a) == kinds(b)
    };
    if !same_kinds(&expected, &record.reject_reasons)
        || stored_metric_reasons != recomputed_metric_reasons
    {
        errors.push(format!(
            "{at}: reject_reasons {:?} disagree with the recomputed verdict {:?}",
            record.reject_reasons, expected
        ));
    }
    if record.valid != record.reject_reasons.is_empty() {
        errors.push(format!(
            "{at}, column valid: {} contradicts reject_reasons {:?}",
            record.valid, record.reject_reasons
        ));
    }
    RowResult {
        errors,
        metrics: Some(metrics),
        scores: recomputed_scores,
    }
}

fn value_diff(a: f32, b: f32) -> f64 {
    if a == b || (a.is_infinite() && b.is_infinite() && a.signum() == b.signum()) {
        0.0
    } else {
        (a as f64 - b as f64).abs()
    }
}

/// (column, |stored - recomputed|, tolerance) for every recomputed value of a row.
fn metric_diffs(record: &PairRecord, result: &RowResult) -> Vec<(&'static str, f64, f64)> {
    let mut diffs = Vec::new();
    if let Some(m) = &result.metrics {
        diffs.extend([
            ("ssim", value_diff(record.ssim, m.ssim), METRIC_TOLERANCE),
            ("psnr", value_diff(record.psnr, m.psnr), METRIC_TOLERANCE),
            (
                "changed_area",
                value_diff(record.changed_area, m.changed_area),
                METRIC_TOLERANCE,
            ),
            (
                "latent_cosine",
                value_diff(record.latent_cosine, m.latent_cosine),
                METRIC_TOLERANCE,
            ),
        ]);
    }
    if let Some(scores) = &result.scores {
        for (name, stored, recomputed) in [
            ("nudenet_unsafe", record.nudenet_unsafe, scores.unsafe_score),
            ("nudenet_safe", record.nudenet_safe, scores.safe_score),
        ] {
            if let (Some(a), Some(b)) = (stored, recomputed) {
                diffs.push((name, value_diff(a, b), DETECTOR_TOLERANCE));
            }
        }
    }
    diffs
}

fn check_shard_file(root: &Path, entry: &ShardEntry, errors: &mut Vec<String>) -> bool {
    if let Err(why) = acs_schema::check_relative(&entry.path) {
        errors.push(format!("{}: shard path {why}", entry.path));
        return false;
    }
    if !acs_schema::is_split_name(&entry.split) {
        errors.push(format!(
            "{}: split `{}` is not a valid split name (letters, digits, _)",
            entry.path, entry.split
        ));
        return false;
    }
    let path = root.join(&entry.path);
    let Ok(meta) = std::fs::metadata(&path) else {
        errors.push(format!(
            "{}: listed in the manifest but missing",
            entry.path
        ));
        return false;
    };
    if meta.len() != entry.bytes {
        errors.push(format!(
            "{}: {} bytes, manifest says {}",
            entry.path,
            meta.len(),
            entry.bytes
        ));
        return false;
    }
    match acs_schema::sha256_file(&path) {
        Ok(sha) if sha == entry.sha256 => {}
        Ok(sha) => {
            errors.push(format!(
                "{}: sha256 mismatch (manifest {}, file {sha})",
                entry.path, entry.sha256
            ));
            return false;
        }
        Err(e) => {
            errors.push(format!("{}: {e}", entry.path));
            return false;
        }
    }
    match read_shard_footer(&path) {
        Ok(footer) => {
            if footer.schema_version.as_deref() != Some("1") || !footer.arrow_schema_matches {
                errors.push(format!("{}: not an acs schema v1 shard", entry.path));
                return false;
            }
            if footer.rows != entry.rows {
                errors.push(format!(
                    "{}: {} rows, manifest says {}",
                    entry.path, footer.rows, entry.rows
                ));
            }
        }
        Err(e) => {
            errors.push(format!(
                "{}: unreadable footer: {}",
                entry.path,
                crate::error::without_path(&e.to_string(), &path)
            ));
            return false;
        }
    }
    true
}

/// How the build's detector can be re-run: (has_detector, scorer, description).
fn load_scorer(
    manifest: &DatasetManifest,
    build: &BuildManifest,
    options: &ValidateOptions,
) -> Result<(bool, Option<SafetyScorer>, String), AcsError> {
    let recorded = &manifest.build_config["detector"];
    if recorded.is_null() {
        return Ok((false, None, "none".into()));
    }
    if options.skip_detector {
        return Ok((true, None, "stored scores only: --skip-detector".into()));
    }
    let spec = build.validation.nudenet_model.clone().unwrap_or_default();
    let path = match &options.nudenet_model {
        Some(path) => path.clone(),
        // A relative path was relative to the build manifest, which validate does not know:
        // try it from the working folder.
        None => match locate_model(&spec, Path::new(".")) {
            Ok(path) => path,
            Err(_) => {
                return Ok((
                    true,
                    None,
                    format!(
                        "stored scores only: the build's model `{spec}` is not here \
                         (pass --nudenet-model PATH to re-run it)"
                    ),
                ))
            }
        },
    };
    let mut section = build.validation.clone();
    section.nudenet_model = Some(path.display().to_string());
    let scorer = SafetyScorer::from_section(&section, Path::new("."))?
        .ok_or_else(|| AcsError::internal("validate: no detector section"))?;
    let expected = recorded["sha256"].as_str().unwrap_or_default();
    if scorer.detector().sha256() != expected {
        return Err(AcsError::input(format!(
            "{}: sha256 {} differs from the detector the build used ({expected})",
            path.display(),
            scorer.detector().sha256()
        )));
    }
    Ok((true, Some(scorer), format!("re-run ({})", path.display())))
}

/// Validates the dataset in `dir` without writing anything: the report and, per shard, which
/// rows are fit to keep. Integrity errors and invalid rows are in the report, not in the
/// `Err` case, which is kept for a dataset that cannot be opened at all.
pub fn inspect(dir: &Path, options: &ValidateOptions) -> Result<Inspection, AcsError> {
    let manifest = DatasetManifest::load(dir)?;
    let build: BuildManifest = serde_json::from_value(manifest.build_config["manifest"].clone())
        .map_err(|e| {
            AcsError::integrity(format!(
                "{}: build_config.manifest is not a build manifest: {e}",
                dir.join(acs_schema::MANIFEST_FILE).display()
            ))
        })?;
    let (has_detector, scorer, detector) = load_scorer(&manifest, &build, options)?;
    let checks = RowChecks {
        thresholds: Thresholds::from_manifest(&build),
        store_latents: build.output.store_latents,
        has_detector,
        scorer: scorer.as_ref(),
    };
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
    let listed: HashSet<&str> = manifest.shards.iter().map(|s| s.path.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(dir.join("data")) {
        let mut extra: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
            .filter(|p| p.ends_with(".parquet") && !listed.contains(p.as_str()))
            .collect();
        extra.sort();
        report.errors.extend(
            extra
                .into_iter()
                .map(|p| format!("{p}: shard not listed in the manifest")),
        );
    }
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut outcomes = Vec::with_capacity(manifest.shards.len());
    for entry in &manifest.shards {
        let mut outcome = ShardOutcome {
            entry: entry.clone(),
            keep: Vec::new(),
        };
        if !check_shard_file(dir, entry, &mut report.errors) {
            outcomes.push(outcome);
            continue;
        }
        let records = match read_shard(&dir.join(&entry.path)) {
            Ok(records) => records,
            Err(e) => {
                // Named relative to the dataset, like every other error of the report.
                report.errors.push(format!(
                    "{}: {}",
                    entry.path,
                    crate::error::without_path(&e.to_string(), &dir.join(&entry.path))
                ));
                outcomes.push(outcome);
                continue;
            }
        };
        let results: Vec<RowResult> = records
            .par_iter()
            .enumerate()
            .map(|(row, record)| check_row(record, &format!("{}: row {row}", entry.path), &checks))
            .collect();
        for (row, (record, result)) in records.iter().zip(results).enumerate() {
            report.rows += 1;
            let errors_before = report.errors.len();
            if record.split != entry.split {
                report.errors.push(format!(
                    "{}: row {row}, column split: `{}` in a `{}` shard",
                    entry.path, record.split, entry.split
                ));
            }
            if !seen_ids.insert(record.pair_id.clone()) {
                report.errors.push(format!(
                    "{}: row {row}, column pair_id: duplicate {}",
                    entry.path, record.pair_id
                ));
            }
            if record.model_sha256 != manifest.model.sha256 {
                report.errors.push(format!(
                    "{}: row {row}, column model_sha256: differs from the manifest's model",
                    entry.path
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
                        "{}: row {row}, column {name}: stored value differs from the recomputed one by {diff:.3e}",
                        entry.path
                    ));
                }
            }
            report.errors.extend(result.errors);
            outcome
                .keep
                .push(record.valid && report.errors.len() == errors_before);
            if record.valid {
                report.valid_rows += 1;
            } else {
                report.invalid_rows += 1;
                for reason in &record.reject_reasons {
                    let kind = reason.split(':').next().unwrap_or(reason).to_owned();
                    *report.reject_reasons.entry(kind).or_insert(0) += 1;
                }
            }
        }
        outcomes.push(outcome);
    }
    let invalid_fraction = if report.rows == 0 {
        0.0
    } else {
        report.invalid_rows as f64 / report.rows as f64
    };
    report.passed = report.errors.is_empty() && invalid_fraction <= options.max_invalid_fraction;
    Ok(Inspection {
        report,
        manifest,
        build,
        shards: outcomes,
    })
}

/// Validates the dataset in `dir`, writes `validation.json` beside its manifest, and returns
/// the report (see [`inspect`]).
pub fn validate(dir: &Path, options: &ValidateOptions) -> Result<ValidationReport, AcsError> {
    let inspection = inspect(dir, options)?;
    write_report(dir, &inspection.report)?;
    Ok(inspection.report)
}

/// Writes `validation.json` into `dir`.
pub fn write_report(dir: &Path, report: &ValidationReport) -> Result<(), AcsError> {
    let mut json = serde_json::to_vec_pretty(report)?;
    json.push(b'\n');
    write_atomic(&dir.join(VALIDATION_FILE), &json)?;
    Ok(())
}

impl ValidationReport {
    /// The error that decides the exit code, if any: integrity first (2), then thresholds (1).
    pub fn failure(&self) -> Option<AcsError> {
        if let Some(first) = self.errors.first() {
            let more = match self.errors.len() {
                1 => String::new(),
                n => format!(" (and {} more errors, see {VALIDATION_FILE})", n - 1),
            };
            // Errors name paths inside the dataset; an absolute one stands alone.
            let prefix = if first.starts_with('/') {
                String::new()
            } else {
                format!("{}/", self.dataset)
            };
            return Some(AcsError::integrity(format!("{prefix}{first}{more}")));
        }
        if !self.passed {
            return Some(AcsError::Invalid(format!(
                "{}: {} of {} rows fail the build's thresholds (allowed fraction {})",
                self.dataset, self.invalid_rows, self.rows, self.max_invalid_fraction
            )));
        }
        None
    }

    /// A human-readable summary table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "dataset      {}\nshards       {}\nrows         {} ({} valid, {} invalid)\n",
            self.dataset, self.shards, self.rows, self.valid_rows, self.invalid_rows
        );
        for (reason, count) in &self.reject_reasons {
            out.push_str(&format!("  rejected   {reason}: {count}\n"));
        }
        out.push_str(&format!("detector     {}\n", self.detector));
        for (metric, diff) in &self.metric_max_abs_diff {
            out.push_str(&format!(
                "recomputed   {metric:<14} max |stored - recomputed| = {diff:.2e}\n"
            ));
        }
        for error in &self.errors {
            out.push_str(&format!("ERROR        {error}\n"));
        }
        out.push_str(&format!(
            "result       {}\n",
            if self.passed { "PASS" } else { "FAIL" }
        ));
        out
    }
}
