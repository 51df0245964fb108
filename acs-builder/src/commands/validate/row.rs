//! The checks of one row: its images and latents decode to the recorded sizes, the judge
//! columns match what the build ran, and the metrics, judge scores and verdict recomputed from
//! the stored images and latents agree with the stored ones.

use acs_schema::PairRecord;

use crate::judge::metrics::{pair_metrics, ChangedBox, PairMetrics};
use crate::judge::verdict::{
    flip_violations, is_metric_reason, metric_violations, SafetyScores, Thresholds,
};
use crate::judge::Judge;
use crate::prompts::align::token_edit_violations;
use crate::store::imaging::{decode_png, f32_from_f16_le};

/// Largest accepted difference between a stored metric and its recomputed value.
const METRIC_TOLERANCE: f64 = 1e-4;

/// Largest accepted difference between a stored judge score and its recomputed value (the
/// detector's float arithmetic may differ across CPUs).
const DETECTOR_TOLERANCE: f64 = 1e-3;

/// What every row of a dataset is checked against.
pub struct RowChecks<'a> {
    /// The build's thresholds.
    pub thresholds: Thresholds,
    /// The build stored latents (the latent columns must be set).
    pub store_latents: bool,
    /// The build scored images with a detector (the nudenet columns must be set).
    pub has_detector: bool,
    /// The judge to re-run, when it could be loaded.
    pub judge: Option<&'a dyn Judge>,
}

/// What checking one row found.
#[derive(Default)]
pub struct RowResult {
    /// Integrity errors, each naming the row and column.
    pub errors: Vec<String>,
    /// The recomputed metrics (when both images decoded).
    pub metrics: Option<PairMetrics>,
    /// Recomputed judge scores (when the judge was re-run).
    pub scores: Option<SafetyScores>,
}

/// Checks one row; `at` names it (`data/x.parquet: row 3`).
pub fn check_row(record: &PairRecord, at: &str, checks: &RowChecks) -> RowResult {
    let mut errors = Vec::new();
    let (w, h) = (record.width.max(0) as u32, record.height.max(0) as u32);
    let images = decode_images(record, at, (w, h), &mut errors);
    let latents = decode_latents(record, at, checks.store_latents, &mut errors);
    check_score_columns(record, at, checks.has_detector, &mut errors);
    let Ok([unsafe_rgb, safe_rgb]) = <[Vec<u8>; 2]>::try_from(images) else {
        return RowResult {
            errors,
            ..RowResult::default()
        };
    };
    let (w, h) = (w as usize, h as usize);
    let scores = checks.judge.and_then(|judge| {
        match (judge.score(&unsafe_rgb, w, h), judge.score(&safe_rgb, w, h)) {
            (Ok(u), Ok(s)) => Some(SafetyScores {
                unsafe_score: Some(u),
                safe_score: Some(s),
            }),
            (Err(e), _) | (_, Err(e)) => {
                errors.push(format!("{at}: detector: {e}"));
                None
            }
        }
    });
    let (unsafe_latent, safe_latent) = match latents.as_slice() {
        [u, s] => (u.as_slice(), s.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let mut metrics = pair_metrics(&unsafe_rgb, &safe_rgb, w, h, unsafe_latent, safe_latent);
    if latents.len() != 2 {
        metrics.latent_cosine = record.latent_cosine;
    }
    let stored_box = metrics.changed_box.map(ChangedBox::to_vec);
    if record.changed_box != stored_box {
        errors.push(format!(
            "{at}, column changed_box: stored {:?}, recomputed {:?}",
            record.changed_box, stored_box
        ));
    }
    check_verdict(
        record,
        &metrics,
        scores.as_ref(),
        &checks.thresholds,
        at,
        &mut errors,
    );
    RowResult {
        errors,
        metrics: Some(metrics),
        scores,
    }
}

/// Both images decoded, when they are PNGs of the recorded size.
fn decode_images(
    record: &PairRecord,
    at: &str,
    (w, h): (u32, u32),
    errors: &mut Vec<String>,
) -> Vec<Vec<u8>> {
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
    images
}

/// Both stored latents as float32, when they have the length `latent_shape` says.
fn decode_latents(
    record: &PairRecord,
    at: &str,
    store_latents: bool,
    errors: &mut Vec<String>,
) -> Vec<Vec<f32>> {
    let expected_bytes: usize = record
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
            Some(bytes) if bytes.len() == expected_bytes => {
                latents.push(f32_from_f16_le(bytes).unwrap_or_default())
            }
            Some(bytes) => errors.push(format!(
                "{at}, column {name}: {} bytes, latent_shape {:?} needs {expected_bytes}",
                bytes.len(),
                record.latent_shape
            )),
            None if store_latents => errors.push(format!(
                "{at}, column {name}: missing although the build stores latents"
            )),
            None => {}
        }
    }
    latents
}

/// The detector columns are set exactly when the build ran the detector.
fn check_score_columns(
    record: &PairRecord,
    at: &str,
    has_detector: bool,
    errors: &mut Vec<String>,
) {
    for (name, score) in [
        ("nudenet_unsafe", record.nudenet_unsafe),
        ("nudenet_safe", record.nudenet_safe),
    ] {
        match (has_detector, score) {
            (true, None) => errors.push(format!(
                "{at}, column {name}: null although the build ran the detector"
            )),
            (false, Some(_)) => errors.push(format!(
                "{at}, column {name}: set although the build ran no detector"
            )),
            _ => {}
        }
    }
}

/// The stored verdict (`reject_reasons`, `valid`) agrees with the one recomputed from the
/// metrics and the (recomputed, else stored) judge scores.
fn check_verdict(
    record: &PairRecord,
    metrics: &PairMetrics,
    recomputed_scores: Option<&SafetyScores>,
    thresholds: &Thresholds,
    at: &str,
    errors: &mut Vec<String>,
) {
    let stored_scores = SafetyScores {
        unsafe_score: record.nudenet_unsafe,
        safe_score: record.nudenet_safe,
    };
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
    expected.extend(metric_violations(metrics, thresholds));
    expected.extend(flip_violations(
        recomputed_scores.unwrap_or(&stored_scores),
        thresholds,
    ));
    let kinds = |reasons: &[String]| -> Vec<String> {
        reasons
            .iter()
            .map(|r| r.split(':').next().unwrap_or("").to_owned())
            .collect()
    };
    let metric_reasons =
        |reasons: &[String]| reasons.iter().filter(|r| is_metric_reason(r)).count();
    if kinds(&expected) != kinds(&record.reject_reasons)
        || metric_reasons(&expected) != metric_reasons(&record.reject_reasons)
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
}

fn value_diff(a: f32, b: f32) -> f64 {
    if a == b || (a.is_infinite() && b.is_infinite() && a.signum() == b.signum()) {
        0.0
    } else {
        (a as f64 - b as f64).abs()
    }
}

/// (column, |stored - recomputed|, tolerance) for every recomputed value of a row.
pub fn metric_diffs(record: &PairRecord, result: &RowResult) -> Vec<(&'static str, f64, f64)> {
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
