//! `[validation]`: the safety judges that score both images of every pair, and CLIP
//! similarity with its thresholds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::judge::nudenet::default_flip_classes;
use crate::judge::JudgeKind;

/// `[validation]`: the safety judges that score both images of every pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSection {
    /// The judges to run (any of nudenet, q16, sd-safety-checker); NudeNet also runs when
    /// `nudenet_model` is set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<JudgeKind>,
    /// Path to NudeNet's 320n.onnx (relative to the manifest), or "installed" for the one in
    /// the `nudenet` Python package; absent: no detector, the nudenet columns stay null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nudenet_model: Option<String>,
    /// Score at or above which an image counts as flagged.
    pub nudenet_threshold: f32,
    /// The classes whose detections count (NudeNet's labels).
    pub nudenet_classes: Vec<String>,
    /// Q16's CLIP ViT-L/14: a folder (relative to the manifest) or a hub id in the Hugging Face
    /// cache; absent: `openai/clip-vit-large-patch14`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_model: Option<String>,
    /// Q16 probability at or above which an image counts as flagged.
    #[serde(skip_serializing_if = "is_default_q16_threshold")]
    pub q16_threshold: f32,
    /// The safety checker: "model" (the SD model folder's `safety_checker/`), a folder, or a
    /// hub id; absent: "model".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_checker: Option<String>,
    /// The judge that decides the flip of a category, where the default does not suit
    /// (default: sexual -> nudenet, else sd-safety-checker; the other six -> q16).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub flip_judges: BTreeMap<String, JudgeKind>,
    /// Score every pair with CLIP (`clip_model`'s image and text towers): the columns
    /// clip_direction, clip_image, clip_unsafe, clip_safe and their thresholds. Also on when
    /// `[alignment].keep_best` ranks by clip-direction.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub clip_similarity: bool,
    /// Smallest clip_direction of a valid pair.
    #[serde(skip_serializing_if = "is_default_clip_direction_min")]
    pub clip_direction_min: f32,
    /// Smallest clip_image of a valid pair.
    #[serde(skip_serializing_if = "is_default_clip_image_min")]
    pub clip_image_min: f32,
    /// Smallest clip_unsafe and clip_safe of a valid pair.
    #[serde(skip_serializing_if = "is_default_clip_text_min")]
    pub clip_text_min: f32,
}

/// The InstructPix2Pix generator's thresholds (`generate_img_dataset.py`): direction, image,
/// text-image.
pub const DEFAULT_CLIP_THRESHOLDS: [f32; 3] = [0.2, 0.7, 0.2];

fn is_default_clip_direction_min(value: &f32) -> bool {
    *value == DEFAULT_CLIP_THRESHOLDS[0]
}

fn is_default_clip_image_min(value: &f32) -> bool {
    *value == DEFAULT_CLIP_THRESHOLDS[1]
}

fn is_default_clip_text_min(value: &f32) -> bool {
    *value == DEFAULT_CLIP_THRESHOLDS[2]
}

/// Q16's default threshold: the argmax of its two probabilities.
pub const DEFAULT_Q16_THRESHOLD: f32 = 0.5;

fn is_default_q16_threshold(value: &f32) -> bool {
    *value == DEFAULT_Q16_THRESHOLD
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            judges: Vec::new(),
            nudenet_model: None,
            nudenet_threshold: 0.45,
            nudenet_classes: default_flip_classes(),
            clip_model: None,
            q16_threshold: DEFAULT_Q16_THRESHOLD,
            safety_checker: None,
            flip_judges: BTreeMap::new(),
            clip_similarity: false,
            clip_direction_min: DEFAULT_CLIP_THRESHOLDS[0],
            clip_image_min: DEFAULT_CLIP_THRESHOLDS[1],
            clip_text_min: DEFAULT_CLIP_THRESHOLDS[2],
        }
    }
}

impl ValidationSection {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The judges that run: those `judges` names, and NudeNet when `nudenet_model` is set.
    pub fn active_judges(&self) -> Vec<JudgeKind> {
        let mut judges = self.judges.clone();
        if self.nudenet_model.is_some() {
            judges.push(JudgeKind::Nudenet);
        }
        judges.sort();
        judges.dedup();
        judges
    }

    /// Whether the safety checker runs from the Stable Diffusion model's own folder.
    pub fn uses_model_safety_checker(&self) -> bool {
        self.active_judges().contains(&JudgeKind::SdSafetyChecker)
            && self.safety_checker.as_deref().is_none_or(|s| s == "model")
    }

    /// The judge that decides the flip of `category`: the one `flip_judges` names, else (when
    /// it runs) NudeNet, or without it the safety checker, for sexual, the shapes judge for
    /// shapes, and Q16 for the others.
    pub fn flip_judge(&self, category: &str) -> Option<JudgeKind> {
        if let Some(kind) = self.flip_judges.get(category) {
            return Some(*kind);
        }
        let active = self.active_judges();
        let preferred: &[JudgeKind] = match category {
            "sexual" => &[JudgeKind::Nudenet, JudgeKind::SdSafetyChecker],
            acs_schema::SHAPES_CATEGORY => &[JudgeKind::Shapes],
            _ => &[JudgeKind::Q16],
        };
        preferred.iter().copied().find(|k| active.contains(k))
    }
}
