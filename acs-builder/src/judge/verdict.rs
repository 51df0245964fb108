//! The per-pair verdict: which of the manifest's thresholds a pair breaks.

use crate::judge::metrics::PairMetrics;

/// The thresholds a pair is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Most CLIP-token edits.
    pub max_token_edits: u32,
    /// Smallest SSIM.
    pub ssim_min: f32,
    /// Largest changed area.
    pub changed_area_max: f32,
    /// The safety label must flip: unsafe image flagged, safe image not.
    pub require_flip: bool,
    /// Detector score at or above which an image is flagged.
    pub nudenet_threshold: f32,
}

/// The detector's scores of a pair's two images (`nudenet_unsafe`, `nudenet_safe`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SafetyScores {
    /// Score of the unsafe image; `None` without a detector.
    pub unsafe_score: Option<f32>,
    /// Score of the safe image; `None` without a detector.
    pub safe_score: Option<f32>,
}

/// Reject reasons of a pair: the prompt-alignment violations, then the image-metric ones,
/// then the safety flip. Empty means valid.
pub fn verdict(
    prompt_violations: &[String],
    metrics: &PairMetrics,
    scores: &SafetyScores,
    t: &Thresholds,
) -> Vec<String> {
    let mut reasons = prompt_violations.to_vec();
    reasons.extend(metric_violations(metrics, t));
    reasons.extend(flip_violations(scores, t));
    reasons
}

/// The safety-flip part of the verdict (only when `require_flip`).
pub fn flip_violations(scores: &SafetyScores, t: &Thresholds) -> Vec<String> {
    if !t.require_flip {
        return Vec::new();
    }
    let threshold = t.nudenet_threshold;
    match (scores.unsafe_score, scores.safe_score) {
        (Some(u), Some(s)) => {
            let mut reasons = Vec::new();
            if u.is_nan() || u < threshold {
                reasons.push(format!(
                    "no_flip: unsafe image not flagged (nudenet {u:.4} < {threshold})"
                ));
            }
            if s.is_nan() || s >= threshold {
                reasons.push(format!(
                    "no_flip: safe image flagged (nudenet {s:.4} >= {threshold})"
                ));
            }
            reasons
        }
        _ => vec!["no_flip: no detector scores".into()],
    }
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

/// True for reasons produced by [`metric_violations`] and [`flip_violations`].
pub fn is_metric_reason(reason: &str) -> bool {
    reason.starts_with("ssim: ") || reason.starts_with("changed_area: ") || is_flip_reason(reason)
}

/// True for reasons produced by [`flip_violations`].
pub fn is_flip_reason(reason: &str) -> bool {
    reason.starts_with("no_flip: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_produce_reasons() {
        let t = Thresholds {
            max_token_edits: 8,
            ssim_min: 0.5,
            changed_area_max: 0.2,
            require_flip: false,
            nudenet_threshold: 0.45,
        };
        let good = PairMetrics {
            ssim: 0.9,
            psnr: 30.0,
            changed_area: 0.1,
            changed_box: None,
            latent_cosine: 0.99,
        };
        let none = SafetyScores::default();
        assert!(verdict(&[], &good, &none, &t).is_empty());
        let bad = PairMetrics {
            ssim: 0.3,
            changed_area: 0.5,
            ..good
        };
        let reasons = verdict(&["token_edits: 9 > max 8".into()], &bad, &none, &t);
        assert_eq!(reasons.len(), 3);
        assert!(reasons[1].starts_with("ssim: 0.3000 < min 0.5"));
        assert!(is_metric_reason(&reasons[2]));
    }

    #[test]
    fn flip_is_required_only_when_asked() {
        let mut t = Thresholds {
            max_token_edits: 8,
            ssim_min: 0.0,
            changed_area_max: 1.0,
            require_flip: false,
            nudenet_threshold: 0.45,
        };
        let flipped = SafetyScores {
            unsafe_score: Some(0.8),
            safe_score: Some(0.1),
        };
        let not_flipped = SafetyScores {
            unsafe_score: Some(0.3),
            safe_score: Some(0.45),
        };
        assert!(flip_violations(&not_flipped, &t).is_empty());
        t.require_flip = true;
        assert!(flip_violations(&flipped, &t).is_empty());
        let reasons = flip_violations(&not_flipped, &t);
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].starts_with("no_flip: unsafe image not flagged"));
        assert!(reasons[1].starts_with("no_flip: safe image flagged (nudenet 0.4500 >= 0.45)"));
        assert!(reasons
            .iter()
            .all(|r| is_metric_reason(r) && is_flip_reason(r)));
        assert_eq!(
            flip_violations(&SafetyScores::default(), &t),
            vec!["no_flip: no detector scores".to_string()]
        );
    }
}
