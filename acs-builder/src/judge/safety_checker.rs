//! The Stable Diffusion safety checker (diffusers' `StableDiffusionSafetyChecker`, the
//! `safety_checker/` folder of SD 1.x pipelines): the image embedding of a CLIP ViT-L/14 tower
//! compared by cosine similarity with 17 concept and 3 special-care embeddings, each with its
//! own threshold. It reports; it never blacks out an image.
//!
//! The arithmetic follows diffusers step by step: per image, a special-care score
//! `round(cos - threshold + adjustment, 3)` for each special concept, where the adjustment
//! becomes 0.01 once one of them is positive; then a concept score the same way (with that
//! adjustment) for each of the 17 concepts; the image has an NSFW concept when any concept
//! score is positive. Scores are float32 and rounded the way numpy rounds a float32
//! (`rint(x * 1000) / 1000` in float32).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::clip::{dot, normalized, ClipEmbedder};
use super::{Judge, JudgeKind};
use crate::error::AcsError;

/// The checker's verdict on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyCheck {
    /// Score per special-care concept (positive: the adjustment applies).
    pub special_scores: Vec<f32>,
    /// Score per concept (positive: a bad concept).
    pub concept_scores: Vec<f32>,
    /// diffusers' `has_nsfw_concept`.
    pub nsfw: bool,
}

impl SafetyCheck {
    /// The largest concept score (the margin of the most likely bad concept).
    pub fn max_margin(&self) -> f32 {
        self.concept_scores
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

/// The safety checker.
pub struct SafetyCheckerJudge {
    clip: ClipEmbedder,
    concepts: Vec<Vec<f32>>,
    concept_thresholds: Vec<f32>,
    special: Vec<Vec<f32>>,
    special_thresholds: Vec<f32>,
}

/// numpy's `round(np.float32(x), 3)`.
fn round3(x: f32) -> f32 {
    (x * 1000.0).round_ties_even() / 1000.0
}

/// The folders a checker loads from: (weights folder, preprocessor config). `dir` is a
/// checker folder (config.json + model.safetensors, with or without a preprocessor config),
/// or a Stable Diffusion pipeline folder holding `safety_checker/` and `feature_extractor/`.
pub fn checker_folders(dir: &Path) -> (PathBuf, PathBuf) {
    let nested = dir.join("safety_checker");
    if nested.join("config.json").is_file() {
        return (
            nested,
            dir.join("feature_extractor/preprocessor_config.json"),
        );
    }
    let own = dir.join("preprocessor_config.json");
    let sibling = dir.join("../feature_extractor/preprocessor_config.json");
    let preprocessor = if own.is_file() || !sibling.is_file() {
        own
    } else {
        sibling
    };
    (dir.to_path_buf(), preprocessor)
}

impl SafetyCheckerJudge {
    /// Loads the checker in `dir` (see [`checker_folders`]).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, AcsError> {
        let (folder, preprocessor) = checker_folders(dir);
        let clip = ClipEmbedder::load(&folder, &preprocessor, dtype, device)?;
        let files = crate::runtime::model::clip_vision::transformers_weights(&folder)?;
        // SAFETY: read-only memory map of files acs does not write while loading.
        let weights = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
            .map_err(|e| AcsError::input(format!("{}: {e}", folder.display())))?;
        let tensor = |name: &str| -> Result<candle_core::Tensor, AcsError> {
            weights
                .load(name, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|_| {
                    AcsError::input(format!(
                        "{}: no tensor `{name}`: not a StableDiffusionSafetyChecker",
                        folder.display()
                    ))
                })
        };
        let rows = |name: &str| -> Result<Vec<Vec<f32>>, AcsError> {
            tensor(name)?
                .to_vec2::<f32>()
                .map_err(|e| AcsError::input(format!("{}: `{name}`: {e}", folder.display())))
        };
        let values = |name: &str| -> Result<Vec<f32>, AcsError> {
            tensor(name)?
                .to_vec1::<f32>()
                .map_err(|e| AcsError::input(format!("{}: `{name}`: {e}", folder.display())))
        };
        let concepts = rows("concept_embeds")?;
        let special = rows("special_care_embeds")?;
        let concept_thresholds = values("concept_embeds_weights")?;
        let special_thresholds = values("special_care_embeds_weights")?;
        let dim = clip.projection_dim();
        let fits = concepts.len() == concept_thresholds.len()
            && special.len() == special_thresholds.len()
            && concepts.iter().chain(&special).all(|row| row.len() == dim);
        if !fits {
            return Err(AcsError::input(format!(
                "{}: the concept embeddings do not fit the {dim}-wide projection",
                folder.display()
            )));
        }
        Ok(Self {
            clip,
            concepts: concepts.iter().map(|c| normalized(c)).collect(),
            concept_thresholds,
            special: special.iter().map(|c| normalized(c)).collect(),
            special_thresholds,
        })
    }

    /// The CLIP tower and preprocessing.
    pub fn clip(&self) -> &ClipEmbedder {
        &self.clip
    }

    /// diffusers' verdict for one image embedding.
    pub fn check(&self, image_embeds: &[f32]) -> SafetyCheck {
        let image = normalized(image_embeds);
        let mut adjustment = 0.0f32;
        let mut special_scores = Vec::with_capacity(self.special.len());
        for (embed, threshold) in self.special.iter().zip(&self.special_thresholds) {
            let score = round3(dot(&image, embed) - threshold + adjustment);
            if score > 0.0 {
                adjustment = 0.01;
            }
            special_scores.push(score);
        }
        let concept_scores: Vec<f32> = self
            .concepts
            .iter()
            .zip(&self.concept_thresholds)
            .map(|(embed, threshold)| round3(dot(&image, embed) - threshold + adjustment))
            .collect();
        let nsfw = concept_scores.iter().any(|&s| s > 0.0);
        SafetyCheck {
            special_scores,
            concept_scores,
            nsfw,
        }
    }

    /// The verdicts of RGB8 images.
    pub fn check_images(
        &self,
        images: &[&[u8]],
        width: usize,
        height: usize,
    ) -> Result<Vec<SafetyCheck>, AcsError> {
        let embeds = self.clip.embed(images, width, height)?;
        Ok(embeds.iter().map(|e| self.check(e)).collect())
    }
}

impl Judge for SafetyCheckerJudge {
    fn kind(&self) -> JudgeKind {
        JudgeKind::SdSafetyChecker
    }

    fn weights_sha256(&self) -> &str {
        self.clip.sha256()
    }

    fn score(&self, rgb: &[u8], width: usize, height: usize, _: &str) -> Result<f32, AcsError> {
        Ok(self.score_batch(&[rgb], &[""], width, height)?[0])
    }

    fn score_batch(
        &self,
        images: &[&[u8]],
        _: &[&str],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, AcsError> {
        let checks = self.check_images(images, width, height)?;
        Ok(checks.iter().map(SafetyCheck::max_margin).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_like_numpy_float32() {
        assert_eq!(round3(0.0004999), 0.0);
        assert_eq!(round3(0.0006), 0.001);
        assert_eq!(round3(-0.0004), -0.0);
        assert_eq!(
            round3(0.0125),
            0.0125f32.mul_add(1000.0, 0.0).round_ties_even() / 1000.0
        );
    }
}
