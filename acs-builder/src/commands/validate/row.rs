//! The checks of one row: its images and latents decode to the recorded sizes, the judge
//! columns match what the build ran, and the metrics, judge scores and verdict recomputed from
//! the stored images and latents agree with the stored ones.

use acs_schema::PairRecord;

use crate::judge::change_mask::{ChangeMask, ChangeRule};
use crate::judge::metrics::{pair_metrics_with_mask, ChangedBox, PairMetrics};
use crate::judge::selection::{rank_score, RankBy, KEEP_BEST_REASON};
use crate::judge::verdict::{
    clip_violations, flip_violations, is_metric_reason, metric_violations, stored_scores,
    JudgeScores, SafetyScores, Thresholds,
};
use crate::judge::{Judge, JudgeKind};
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
    /// When a pixel counts as changed (changed_area, changed_box, the change mask).
    pub change_rule: ChangeRule,
    /// The build stored change masks (the mask columns must be set, else null).
    pub masks: bool,
    /// The steps whose trajectory targets the build recorded (empty: the columns are null).
    pub trajectory_steps: Vec<i32>,
    /// The judges the build ran (their columns must be set, all others null).
    pub ran: Vec<JudgeKind>,
    /// The judges to re-run (those of `ran` whose weights could be loaded).
    pub judges: Vec<&'a dyn Judge>,
    /// The build scored pairs with CLIP (the clip columns must be set, else null).
    pub clip_similarity: bool,
    /// The build's `keep_best` (k and rank), when it was on.
    pub keep_best: Option<(usize, RankBy)>,
}

/// What checking one row found.
#[derive(Default)]
pub struct RowResult {
    /// Integrity errors, each naming the row and column.
    pub errors: Vec<String>,
    /// The recomputed metrics (when both images decoded).
    pub metrics: Option<PairMetrics>,
    /// Recomputed judge scores (of the judges re-run).
    pub scores: JudgeScores,
    /// The row's `keep_best` rank score, recomputed (NaN without keep_best).
    pub rank: f32,
}

/// Checks one row; `at` names it (`data/x.parquet: row 3`).
pub fn check_row(record: &PairRecord, at: &str, checks: &RowChecks) -> RowResult {
    let mut errors = Vec::new();
    let (w, h) = (record.width.max(0) as u32, record.height.max(0) as u32);
    let images = decode_images(record, at, (w, h), &mut errors);
    let latents = decode_latents(record, at, checks.store_latents, &mut errors);
    check_score_columns(record, at, &checks.ran, &mut errors);
    check_clip_columns(record, at, checks.clip_similarity, &mut errors);
    check_trajectory(record, at, &checks.trajectory_steps, &mut errors);
    if record.is_benign() {
        check_benign(record, at, &mut errors);
    }
    let Ok([unsafe_rgb, safe_rgb]) = <[Vec<u8>; 2]>::try_from(images) else {
        return RowResult {
            errors,
            rank: f32::NAN,
            ..RowResult::default()
        };
    };
    let (w, h) = (w as usize, h as usize);
    let mut scores = JudgeScores::default();
    for judge in &checks.judges {
        match judge
            .score_batch(
                &[&unsafe_rgb, &safe_rgb],
                &[&record.unsafe_prompt, &record.safe_prompt],
                w,
                h,
            )
            .as_deref()
        {
            Ok([u, s]) => {
                let both = SafetyScores {
                    unsafe_score: Some(*u),
                    safe_score: Some(*s),
                };
                scores.0.insert(judge.kind(), both);
            }
            Ok(_) => errors.push(format!("{at}: {}: not two scores", judge.kind())),
            Err(e) if judge.kind() == JudgeKind::Nudenet => {
                errors.push(format!("{at}: detector: {e}"))
            }
            Err(e) => errors.push(format!("{at}: {}: {e}", judge.kind())),
        }
    }
    let (unsafe_latent, safe_latent) = match latents.as_slice() {
        [u, s] => (u.as_slice(), s.as_slice()),
        _ => (&[][..], &[][..]),
    };
    let expected_mask = checks
        .masks
        .then(|| ChangeMask::of(&unsafe_rgb, &safe_rgb, w, h, checks.change_rule));
    let mut metrics = pair_metrics_with_mask(
        &unsafe_rgb,
        &safe_rgb,
        w,
        h,
        unsafe_latent,
        safe_latent,
        checks.change_rule,
        expected_mask.as_ref(),
    );
    check_masks(record, at, expected_mask.as_ref(), &mut errors);
    check_blend_mask_image(record, at, checks.masks, (w, h), &mut errors);
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
        &scores,
        &checks.thresholds,
        at,
        &mut errors,
    );
    let rank = match checks.keep_best {
        Some((_, by)) => rank_score(by, record, Some((&unsafe_rgb, &safe_rgb))),
        None => f32::NAN,
    };
    RowResult {
        errors,
        metrics: Some(metrics),
        scores,
        rank,
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

/// The change-mask columns: null unless the build stores masks (`expected` is then the mask
/// recomputed from the two images under the build's rule); else that mask, at pixel and at
/// latent resolution.
fn check_masks(
    record: &PairRecord,
    at: &str,
    expected: Option<&ChangeMask>,
    errors: &mut Vec<String>,
) {
    let (mask, latent) = (&record.change_mask, &record.change_mask_latent);
    let Some(expected) = expected else {
        for (column, set) in [
            ("change_mask", mask.is_some()),
            ("change_mask_latent", latent.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{at}, column {column}: set although the build stores no masks"
                ));
            }
        }
        return;
    };
    match mask.as_ref().map(|m| ChangeMask::from_png(&m.bytes)) {
        None => errors.push(format!(
            "{at}, column change_mask: null although the build stores masks"
        )),
        Some(Err(e)) => errors.push(format!("{at}, column change_mask: {e}")),
        Some(Ok(stored)) if stored != *expected => errors.push(format!(
            "{at}, column change_mask: differs from the mask of the two images (stored {:?} \
             with area {:.4}, recomputed area {:.4})",
            stored.size(),
            stored.area(),
            expected.area()
        )),
        Some(Ok(_)) => {}
    }
    let (lh, lw) = match record.latent_shape[..] {
        [_, lh, lw] => (lh.max(0) as usize, lw.max(0) as usize),
        _ => (0, 0),
    };
    match latent {
        None => errors.push(format!(
            "{at}, column change_mask_latent: null although the build stores masks"
        )),
        Some(bytes) if *bytes != expected.at_latent_resolution(lh, lw) => errors.push(format!(
            "{at}, column change_mask_latent: differs from the change mask at {lh} x {lw}"
        )),
        Some(_) => {}
    }
}

/// `blend_mask_image`: set exactly when the build stores masks and the row has a blend mask,
/// and then that mask upsampled to the image.
fn check_blend_mask_image(
    record: &PairRecord,
    at: &str,
    masks: bool,
    (width, height): (usize, usize),
    errors: &mut Vec<String>,
) {
    let column = "column blend_mask_image";
    match (&record.blend_mask, masks, &record.blend_mask_image) {
        (Some(bits), true, Some(image)) => {
            let (lh, lw) = match record.latent_shape[..] {
                [_, lh, lw] => (lh.max(0) as usize, lw.max(0) as usize),
                _ => (0, 0),
            };
            let expected = ChangeMask::from_latent(bits, (lh, lw), width, height);
            match ChangeMask::from_png(&image.bytes) {
                Err(e) => errors.push(format!("{at}, {column}: {e}")),
                Ok(stored) if stored != expected => errors.push(format!(
                    "{at}, {column}: differs from blend_mask upsampled to {width} x {height}"
                )),
                Ok(_) => {}
            }
        }
        (Some(_), true, None) => errors.push(format!(
            "{at}, {column}: null although the build stores masks and the row has a blend mask"
        )),
        (None, _, Some(_)) => errors.push(format!("{at}, {column}: set without a blend_mask")),
        (Some(_), false, Some(_)) => errors.push(format!(
            "{at}, {column}: set although the build stores no masks"
        )),
        _ => {}
    }
}

/// The trajectory columns: null unless the build recorded steps; else the recorded steps,
/// one timestep each, and three float16 arrays of `[steps, *latent_shape]`.
fn check_trajectory(record: &PairRecord, at: &str, steps: &[i32], errors: &mut Vec<String>) {
    let columns = [
        ("trajectory_steps", record.trajectory_steps.is_some()),
        (
            "trajectory_timesteps",
            record.trajectory_timesteps.is_some(),
        ),
        ("trajectory_latents", record.trajectory_latents.is_some()),
        (
            "trajectory_eps_unsafe",
            record.trajectory_eps_unsafe.is_some(),
        ),
        ("trajectory_eps_safe", record.trajectory_eps_safe.is_some()),
    ];
    if steps.is_empty() {
        for (column, _) in columns.iter().filter(|(_, set)| *set) {
            errors.push(format!(
                "{at}, column {column}: set although the build recorded no steps"
            ));
        }
        return;
    }
    if let Some((column, _)) = columns.iter().find(|(_, set)| !*set) {
        errors.push(format!(
            "{at}, column {column}: null although the build recorded steps {steps:?}"
        ));
        return;
    }
    match record.trajectory() {
        Err(e) => errors.push(format!("{at}: {e}")),
        Ok(Some(t)) if t.steps != steps => errors.push(format!(
            "{at}, column trajectory_steps: {:?}, the build recorded {steps:?}",
            t.steps
        )),
        Ok(Some(t)) if record.is_benign() && t.eps_safe != t.eps_unsafe => errors.push(format!(
            "{at}, column trajectory_eps_safe: differs from trajectory_eps_unsafe in a benign row"
        )),
        Ok(_) => {}
    }
}

/// A benign row's two sides are one rendering of one prompt.
fn check_benign(record: &PairRecord, at: &str, errors: &mut Vec<String>) {
    let same = [
        ("safe_prompt", record.safe_prompt == record.unsafe_prompt),
        (
            "safe_image",
            record.safe_image.bytes == record.unsafe_image.bytes,
        ),
        ("safe_latent", record.safe_latent == record.unsafe_latent),
        ("token_edit_distance", record.token_edit_distance == 0),
        ("concepts", record.concepts.is_empty()),
    ];
    for (column, ok) in same {
        if !ok {
            errors.push(format!(
                "{at}, column {column}: a benign row's safe side must equal its unsafe side"
            ));
        }
    }
}

/// The judge columns are set exactly for the judges the build ran.
fn check_score_columns(record: &PairRecord, at: &str, ran: &[JudgeKind], errors: &mut Vec<String>) {
    for kind in JudgeKind::ALL {
        let (u, s) = stored_scores(record, kind);
        let prefix = kind.column();
        let (ran_it, none) = if kind == JudgeKind::Nudenet {
            ("the detector".to_owned(), "no detector".to_owned())
        } else {
            (format!("the {kind} judge"), format!("no {kind} judge"))
        };
        for (side, score) in [("unsafe", u), ("safe", s)] {
            match (ran.contains(&kind), score) {
                (true, None) => errors.push(format!(
                    "{at}, column {prefix}_{side}: null although the build ran {ran_it}"
                )),
                (false, Some(_)) => errors.push(format!(
                    "{at}, column {prefix}_{side}: set although the build ran {none}"
                )),
                _ => {}
            }
        }
    }
}

/// The CLIP columns are set exactly when the build scored pairs with CLIP (the direction and
/// image similarity not in benign rows, which have one image).
fn check_clip_columns(record: &PairRecord, at: &str, ran: bool, errors: &mut Vec<String>) {
    let pair = ran && !record.is_benign();
    let columns = [
        ("clip_direction", record.clip_direction.is_some(), pair),
        ("clip_image", record.clip_image.is_some(), pair),
        ("clip_unsafe", record.clip_unsafe.is_some(), ran),
        ("clip_safe", record.clip_safe.is_some(), ran),
    ];
    for (column, set, expected) in columns {
        match (set, expected) {
            (false, true) => errors.push(format!(
                "{at}, column {column}: null although the build scored pairs with CLIP"
            )),
            (true, false) if ran => errors.push(format!(
                "{at}, column {column}: set in a benign row (one image, no pair to compare)"
            )),
            (true, false) => errors.push(format!(
                "{at}, column {column}: set although the build did not score pairs with CLIP"
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
    recomputed: &JudgeScores,
    thresholds: &Thresholds,
    at: &str,
    errors: &mut Vec<String>,
) {
    // Recomputed scores where a judge was re-run, stored ones for the others.
    let mut scores = JudgeScores::of_record(record);
    scores.0.extend(recomputed.0.iter().map(|(k, v)| (*k, *v)));
    let mut expected: Vec<String> = record
        .reject_reasons
        .iter()
        .filter(|r| r.starts_with("truncated: "))
        .cloned()
        .collect();
    if !record.is_benign() {
        expected.extend(token_edit_violations(
            record.token_edit_distance.max(0) as u32,
            thresholds.max_token_edits,
        ));
    }
    expected.extend(metric_violations(metrics, thresholds));
    expected.extend(flip_violations(&record.category, &scores, thresholds));
    expected.extend(clip_violations(record, thresholds));
    // keep_best's reasons are checked across the dataset (validate's selection check); here
    // only that they mark rows that were otherwise valid.
    if expected.is_empty() {
        expected.extend(
            record
                .reject_reasons
                .iter()
                .filter(|r| r.starts_with(KEEP_BEST_REASON))
                .cloned(),
        );
    }
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
    for (kind, recomputed) in &result.scores.0 {
        let (u, s) = stored_scores(record, *kind);
        for (column, stored, recomputed) in [
            (unsafe_column(*kind), u, recomputed.unsafe_score),
            (safe_column(*kind), s, recomputed.safe_score),
        ] {
            if let (Some(a), Some(b)) = (stored, recomputed) {
                diffs.push((column, value_diff(a, b), DETECTOR_TOLERANCE));
            }
        }
    }
    diffs
}

fn unsafe_column(kind: JudgeKind) -> &'static str {
    match kind {
        JudgeKind::Nudenet => "nudenet_unsafe",
        JudgeKind::Q16 => "q16_unsafe",
        JudgeKind::SdSafetyChecker => "sd_safety_checker_unsafe",
        JudgeKind::Shapes => "shapes_unsafe",
    }
}

fn safe_column(kind: JudgeKind) -> &'static str {
    match kind {
        JudgeKind::Nudenet => "nudenet_safe",
        JudgeKind::Q16 => "q16_safe",
        JudgeKind::SdSafetyChecker => "sd_safety_checker_safe",
        JudgeKind::Shapes => "shapes_safe",
    }
}
