//! `acs validate`: integrity (hashes, footers, schema, row counts, listed and unlisted shards,
//! duplicate ids, decodable images, latent lengths) and alignment (metrics recomputed from the
//! stored images and latents, verdicts re-derived from the build's thresholds).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

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
use crate::verdict::{is_metric_reason, metric_violations, Thresholds};

/// Name of the report written beside the manifest.
pub const VALIDATION_FILE: &str = "validation.json";

/// Largest accepted difference between a stored metric and its recomputed value.
const METRIC_TOLERANCE: f64 = 1e-4;

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
}

/// Checks one row; returns errors and the recomputed metrics.
fn check_row(
    record: &PairRecord,
    at: &str,
    thresholds: &Thresholds,
    store_latents: bool,
) -> (Vec<String>, Option<PairMetrics>) {
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
    if images.len() != 2 {
        return (errors, None);
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
    (errors, Some(metrics))
}

fn metric_diffs(record: &PairRecord, m: &PairMetrics) -> [(&'static str, f64); 4] {
    let diff = |a: f32, b: f32| {
        if a == b || (a.is_infinite() && b.is_infinite() && a.signum() == b.signum()) {
            0.0
        } else {
            (a as f64 - b as f64).abs()
        }
    };
    [
        ("ssim", diff(record.ssim, m.ssim)),
        ("psnr", diff(record.psnr, m.psnr)),
        ("changed_area", diff(record.changed_area, m.changed_area)),
        ("latent_cosine", diff(record.latent_cosine, m.latent_cosine)),
    ]
}

fn check_shard_file(root: &Path, entry: &ShardEntry, errors: &mut Vec<String>) -> bool {
    if let Err(why) = acs_schema::check_relative(&entry.path) {
        errors.push(format!("{}: shard path {why}", entry.path));
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
            if footer.rows != entry.rows {
                errors.push(format!(
                    "{}: {} rows, manifest says {}",
                    entry.path, footer.rows, entry.rows
                ));
            }
            if footer.schema_version.as_deref() != Some("1") || !footer.arrow_schema_matches {
                errors.push(format!("{}: not an acs schema v1 shard", entry.path));
                return false;
            }
        }
        Err(e) => {
            errors.push(format!("{}: unreadable footer: {e}", entry.path));
            return false;
        }
    }
    true
}

/// Validates the dataset in `dir`, writes `validation.json` beside its manifest, and returns
/// the report. Integrity errors and invalid rows are in the report, not in the `Err` case,
/// which is kept for a dataset that cannot be opened at all.
pub fn validate(dir: &Path, max_invalid_fraction: f64) -> Result<ValidationReport, AcsError> {
    let manifest = DatasetManifest::load(dir)?;
    let build: BuildManifest = serde_json::from_value(manifest.build_config["manifest"].clone())
        .map_err(|e| {
            AcsError::integrity(format!(
                "{}: build_config.manifest is not a build manifest: {e}",
                dir.join(acs_schema::MANIFEST_FILE).display()
            ))
        })?;
    let thresholds = Thresholds::from_manifest(&build);
    let mut report = ValidationReport {
        dataset: dir.display().to_string(),
        shards: manifest.shards.len(),
        max_invalid_fraction,
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
    for entry in &manifest.shards {
        if !check_shard_file(dir, entry, &mut report.errors) {
            continue;
        }
        let records = match read_shard(&dir.join(&entry.path)) {
            Ok(records) => records,
            Err(e) => {
                report.errors.push(crate::error::one_line(&e.to_string()));
                continue;
            }
        };
        let results: Vec<(Vec<String>, Option<PairMetrics>)> = records
            .par_iter()
            .enumerate()
            .map(|(row, record)| {
                check_row(
                    record,
                    &format!("{}: row {row}", entry.path),
                    &thresholds,
                    build.output.store_latents,
                )
            })
            .collect();
        for (row, (record, (errors, metrics))) in records.iter().zip(results).enumerate() {
            report.rows += 1;
            report.errors.extend(errors);
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
            if let Some(metrics) = metrics {
                for (name, diff) in metric_diffs(record, &metrics) {
                    let max = report
                        .metric_max_abs_diff
                        .entry(name.to_owned())
                        .or_insert(0.0);
                    *max = max.max(diff);
                    if diff > METRIC_TOLERANCE {
                        report.errors.push(format!(
                            "{}: row {row}, column {name}: stored value differs from the recomputed one by {diff:.3e}",
                            entry.path
                        ));
                    }
                }
            }
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
    }
    let invalid_fraction = if report.rows == 0 {
        0.0
    } else {
        report.invalid_rows as f64 / report.rows as f64
    };
    report.passed = report.errors.is_empty() && invalid_fraction <= max_invalid_fraction;
    let mut json = serde_json::to_vec_pretty(&report)?;
    json.push(b'\n');
    write_atomic(&dir.join(VALIDATION_FILE), &json)?;
    Ok(report)
}

impl ValidationReport {
    /// The error that decides the exit code, if any: integrity first (2), then thresholds (1).
    pub fn failure(&self) -> Option<AcsError> {
        if let Some(first) = self.errors.first() {
            let more = match self.errors.len() {
                1 => String::new(),
                n => format!(" (and {} more errors, see {VALIDATION_FILE})", n - 1),
            };
            return Some(AcsError::integrity(format!(
                "{}/{first}{more}",
                self.dataset
            )));
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
