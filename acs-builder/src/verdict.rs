//! The per-pair verdict: which of the manifest's thresholds a pair breaks.

use crate::config::BuildManifest;
use crate::metrics::PairMetrics;

/// The thresholds of `[alignment]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Most CLIP-token edits.
    pub max_token_edits: u32,
    /// Smallest SSIM.
    pub ssim_min: f32,
    /// Largest changed area.
    pub changed_area_max: f32,
}

impl Thresholds {
    /// The thresholds a manifest sets.
    pub fn from_manifest(manifest: &BuildManifest) -> Self {
        Self {
            max_token_edits: manifest.alignment.max_token_edits,
            ssim_min: manifest.alignment.ssim_min,
            changed_area_max: manifest.alignment.changed_area_max,
        }
    }
}

/// Reject reasons of a pair: the prompt-alignment violations followed by the image-metric
/// ones. Empty means valid.
pub fn verdict(prompt_violations: &[String], metrics: &PairMetrics, t: &Thresholds) -> Vec<String> {
    let mut reasons = prompt_violations.to_vec();
    reasons.extend(metric_violations(metrics, t));
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

/// True for reasons produced by [`metric_violations`].
pub fn is_metric_reason(reason: &str) -> bool {
    reason.starts_with("ssim: ") || reason.starts_with("changed_area: ")
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
        };
        let good = PairMetrics {
            ssim: 0.9,
            psnr: 30.0,
            changed_area: 0.1,
            latent_cosine: 0.99,
        };
        assert!(verdict(&[], &good, &t).is_empty());
        let bad = PairMetrics {
            ssim: 0.3,
            changed_area: 0.5,
            ..good
        };
        let reasons = verdict(&["token_edits: 9 > max 8".into()], &bad, &t);
        assert_eq!(reasons.len(), 3);
        assert!(reasons[1].starts_with("ssim: 0.3000 < min 0.5"));
        assert!(is_metric_reason(&reasons[2]));
    }
}
