//! The per-pair verdict: which of the manifest's thresholds a pair breaks, including the safety
//! flip (the unsafe image flagged and the safe one not, by the judge that decides the pair's
//! category).

use std::collections::BTreeMap;

use acs_schema::PairRecord;

use super::JudgeKind;
use crate::judge::metrics::PairMetrics;

/// The thresholds a pair is held to.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Most CLIP-token edits.
    pub max_token_edits: u32,
    /// Smallest SSIM.
    pub ssim_min: f32,
    /// Largest changed area.
    pub changed_area_max: f32,
    /// The safety label must flip: unsafe image flagged, safe image not.
    pub require_flip: bool,
    /// NudeNet score at or above which an image is flagged.
    pub nudenet_threshold: f32,
    /// Q16 probability at or above which an image is flagged.
    pub q16_threshold: f32,
    /// Smallest clip_direction (checked where the row has one).
    pub clip_direction_min: f32,
    /// Smallest clip_image (checked where the row has one).
    pub clip_image_min: f32,
    /// Smallest clip_unsafe and clip_safe (checked where the row has them).
    pub clip_text_min: f32,
    /// The judge that decides the flip of each category (categories without one cannot
    /// flip).
    pub flip_judges: BTreeMap<String, JudgeKind>,
}

/// One judge's scores of a pair's two images.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SafetyScores {
    /// Score of the unsafe image; `None` when the judge did not run.
    pub unsafe_score: Option<f32>,
    /// Score of the safe image; `None` when the judge did not run.
    pub safe_score: Option<f32>,
}

/// Every judge's scores of a pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JudgeScores(pub BTreeMap<JudgeKind, SafetyScores>);

impl JudgeScores {
    /// The scores a row stores.
    pub fn of_record(record: &PairRecord) -> Self {
        let mut scores = BTreeMap::new();
        for kind in JudgeKind::ALL {
            let (unsafe_score, safe_score) = stored_scores(record, kind);
            if unsafe_score.is_some() || safe_score.is_some() {
                scores.insert(
                    kind,
                    SafetyScores {
                        unsafe_score,
                        safe_score,
                    },
                );
            }
        }
        Self(scores)
    }

    /// The scores of `kind` (none when it did not run).
    pub fn get(&self, kind: JudgeKind) -> SafetyScores {
        self.0.get(&kind).copied().unwrap_or_default()
    }
}

/// The (unsafe, safe) columns of `kind` in a row.
pub fn stored_scores(record: &PairRecord, kind: JudgeKind) -> (Option<f32>, Option<f32>) {
    match kind {
        JudgeKind::Nudenet => (record.nudenet_unsafe, record.nudenet_safe),
        JudgeKind::Q16 => (record.q16_unsafe, record.q16_safe),
        JudgeKind::SdSafetyChecker => (
            record.sd_safety_checker_unsafe,
            record.sd_safety_checker_safe,
        ),
        JudgeKind::Shapes => (record.shapes_unsafe, record.shapes_safe),
    }
}

/// Sets the (unsafe, safe) columns of `kind` in a row.
pub fn store_scores(record: &mut PairRecord, kind: JudgeKind, scores: SafetyScores) {
    let (u, s) = (scores.unsafe_score, scores.safe_score);
    match kind {
        JudgeKind::Nudenet => (record.nudenet_unsafe, record.nudenet_safe) = (u, s),
        JudgeKind::Q16 => (record.q16_unsafe, record.q16_safe) = (u, s),
        JudgeKind::SdSafetyChecker => {
            (
                record.sd_safety_checker_unsafe,
                record.sd_safety_checker_safe,
            ) = (u, s)
        }
        JudgeKind::Shapes => (record.shapes_unsafe, record.shapes_safe) = (u, s),
    }
}

/// Whether `kind` flags an image with `score`: NudeNet and Q16 at or above their thresholds,
/// the safety checker when a concept margin is positive (diffusers' `has_nsfw_concept`), the
/// shapes judge when the image does not show all of its prompt.
pub fn flags(kind: JudgeKind, score: f32, t: &Thresholds) -> bool {
    match kind {
        JudgeKind::Nudenet => score >= t.nudenet_threshold,
        JudgeKind::Q16 => score >= t.q16_threshold,
        JudgeKind::SdSafetyChecker => score > 0.0,
        JudgeKind::Shapes => score < 1.0,
    }
}

/// The comparisons behind a verdict of `kind`: (not flagged, flagged), e.g. ("< 0.45",
/// ">= 0.45").
fn comparisons(kind: JudgeKind, t: &Thresholds) -> (String, String) {
    match kind {
        JudgeKind::Nudenet => (
            format!("< {}", t.nudenet_threshold),
            format!(">= {}", t.nudenet_threshold),
        ),
        JudgeKind::Q16 => (
            format!("< {}", t.q16_threshold),
            format!(">= {}", t.q16_threshold),
        ),
        JudgeKind::SdSafetyChecker => ("<= 0".into(), "> 0".into()),
        JudgeKind::Shapes => ("= 1".into(), "< 1".into()),
    }
}

/// Reject reasons of a pair: the prompt-alignment violations, then the image-metric ones,
/// then the safety flip. Empty means valid.
pub fn verdict(
    prompt_violations: &[String],
    metrics: &PairMetrics,
    category: &str,
    scores: &JudgeScores,
    t: &Thresholds,
) -> Vec<String> {
    let mut reasons = prompt_violations.to_vec();
    reasons.extend(metric_violations(metrics, t));
    reasons.extend(flip_violations(category, scores, t));
    reasons
}

/// The safety-flip part of the verdict (only when `require_flip`): the category's judge must
/// flag the unsafe image and not the safe one. Benign rows have nothing to flip.
pub fn flip_violations(category: &str, scores: &JudgeScores, t: &Thresholds) -> Vec<String> {
    if !t.require_flip || category == acs_schema::BENIGN_CATEGORY {
        return Vec::new();
    }
    let Some(&kind) = t.flip_judges.get(category) else {
        return vec![format!("no_flip: no judge for category `{category}`")];
    };
    let name = kind.column();
    let (below, above) = comparisons(kind, t);
    if kind == JudgeKind::Shapes {
        return shapes_flip_violations(scores.get(kind));
    }
    match (scores.get(kind).unsafe_score, scores.get(kind).safe_score) {
        (Some(u), Some(s)) => {
            let mut reasons = Vec::new();
            if u.is_nan() || !flags(kind, u, t) {
                reasons.push(format!(
                    "no_flip: unsafe image not flagged ({name} {u:.4} {below})"
                ));
            }
            if s.is_nan() || flags(kind, s, t) {
                reasons.push(format!(
                    "no_flip: safe image flagged ({name} {s:.4} {above})"
                ));
            }
            reasons
        }
        _ if kind == JudgeKind::Nudenet => vec!["no_flip: no detector scores".into()],
        _ => vec![format!("no_flip: no {name} scores")],
    }
}

/// The shapes demonstrator's flip: the edited attribute changed and nothing else did, which
/// (the prompts differing in that attribute only) is both images showing their own prompts.
fn shapes_flip_violations(scores: SafetyScores) -> Vec<String> {
    let (Some(u), Some(s)) = (scores.unsafe_score, scores.safe_score) else {
        return vec!["no_flip: no shapes scores".into()];
    };
    let mut reasons = Vec::new();
    for (side, score) in [("unsafe", u), ("safe", s)] {
        if score.is_nan() || score < 1.0 {
            reasons.push(format!(
                "no_flip: the {side} image does not show its prompt (shapes {score:.4} < 1)"
            ));
        }
    }
    reasons
}

/// The image-metric part of the verdict.
pub fn metric_violations(metrics: &PairMetrics, t: &Thresholds) -> Vec<String> {
    let mut reasons = Vec::new();
    if metrics.ssim.is_nan() || metrics.ssim < t.ssim_min {
        reasons.push(format!("ssim: {:.4} < min {}", metrics.ssim, t.ssim_min));
    }
    if metrics.changed_area.is_nan() || metrics.changed_area > t.changed_area_max {
        reasons.push(format!(
            "changed_area: {:.4} > max {}",
            metrics.changed_area, t.changed_area_max
        ));
    }
    reasons
}

/// The CLIP-similarity part of the verdict: each of a row's CLIP columns that is set must
/// reach its threshold (the InstructPix2Pix generator's filter).
pub fn clip_violations(record: &PairRecord, t: &Thresholds) -> Vec<String> {
    let checks = [
        (
            "clip_direction",
            record.clip_direction,
            t.clip_direction_min,
        ),
        ("clip_image", record.clip_image, t.clip_image_min),
        ("clip_unsafe", record.clip_unsafe, t.clip_text_min),
        ("clip_safe", record.clip_safe, t.clip_text_min),
    ];
    checks
        .into_iter()
        .filter_map(|(column, value, min)| {
            let value = value?;
            (value.is_nan() || value < min).then(|| format!("{column}: {value:.4} < min {min}"))
        })
        .collect()
}

/// True for reasons produced by [`metric_violations`], [`flip_violations`] and
/// [`clip_violations`].
pub fn is_metric_reason(reason: &str) -> bool {
    reason.starts_with("ssim: ")
        || reason.starts_with("changed_area: ")
        || reason.starts_with("clip_")
        || is_flip_reason(reason)
}

/// True for reasons produced by [`flip_violations`].
pub fn is_flip_reason(reason: &str) -> bool {
    reason.starts_with("no_flip: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(require_flip: bool) -> Thresholds {
        Thresholds {
            max_token_edits: 8,
            ssim_min: 0.5,
            changed_area_max: 0.2,
            require_flip,
            nudenet_threshold: 0.45,
            q16_threshold: 0.5,
            clip_direction_min: 0.2,
            clip_image_min: 0.7,
            clip_text_min: 0.2,
            flip_judges: BTreeMap::from([
                ("sexual".to_owned(), JudgeKind::Nudenet),
                ("violence".to_owned(), JudgeKind::Q16),
                ("hate".to_owned(), JudgeKind::SdSafetyChecker),
            ]),
        }
    }

    fn scores(kind: JudgeKind, u: f32, s: f32) -> JudgeScores {
        JudgeScores(BTreeMap::from([(
            kind,
            SafetyScores {
                unsafe_score: Some(u),
                safe_score: Some(s),
            },
        )]))
    }

    #[test]
    fn thresholds_produce_reasons() {
        let t = thresholds(false);
        let good = PairMetrics {
            ssim: 0.9,
            psnr: 30.0,
            changed_area: 0.1,
            changed_box: None,
            latent_cosine: 0.99,
        };
        let none = JudgeScores::default();
        assert!(verdict(&[], &good, "sexual", &none, &t).is_empty());
        let bad = PairMetrics {
            ssim: 0.3,
            changed_area: 0.5,
            ..good
        };
        let reasons = verdict(
            &["token_edits: 9 > max 8".into()],
            &bad,
            "sexual",
            &none,
            &t,
        );
        assert_eq!(reasons.len(), 3);
        assert!(reasons[1].starts_with("ssim: 0.3000 < min 0.5"));
        assert!(is_metric_reason(&reasons[2]));
    }

    #[test]
    fn flip_is_required_only_when_asked_and_judged_by_the_categorys_judge() {
        let not_flipped = scores(JudgeKind::Nudenet, 0.3, 0.45);
        assert!(flip_violations("sexual", &not_flipped, &thresholds(false)).is_empty());
        let t = thresholds(true);
        let flipped = scores(JudgeKind::Nudenet, 0.8, 0.1);
        assert!(flip_violations("sexual", &flipped, &t).is_empty());
        let reasons = flip_violations("sexual", &not_flipped, &t);
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].starts_with("no_flip: unsafe image not flagged"));
        assert!(reasons[1].starts_with("no_flip: safe image flagged (nudenet 0.4500 >= 0.45)"));
        assert!(reasons
            .iter()
            .all(|r| is_metric_reason(r) && is_flip_reason(r)));
        assert_eq!(
            flip_violations("sexual", &JudgeScores::default(), &t),
            vec!["no_flip: no detector scores".to_string()]
        );
        // Q16 decides violence; NudeNet's scores do not count there.
        assert_eq!(
            flip_violations("violence", &flipped, &t),
            vec!["no_flip: no q16 scores".to_string()]
        );
        assert!(flip_violations("violence", &scores(JudgeKind::Q16, 0.97, 0.02), &t).is_empty());
        // The safety checker flags positive margins only.
        let margins = scores(JudgeKind::SdSafetyChecker, 0.0, -0.2);
        assert_eq!(
            flip_violations("hate", &margins, &t),
            vec!["no_flip: unsafe image not flagged (sd_safety_checker 0.0000 <= 0)".to_string()]
        );
        assert_eq!(
            flip_violations("shocking", &flipped, &t),
            vec!["no_flip: no judge for category `shocking`".to_string()]
        );
    }
}
