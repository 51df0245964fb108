//! Judging a rendered pair: image and latent alignment metrics, safety judges (classifiers that
//! score how unsafe an image is), and the verdict against the thresholds. Judges know nothing
//! of manifests: a caller builds them from its settings.
//!
//! - [`metrics`]: SSIM, PSNR, changed area and box, latent cosine
//! - [`change_mask`]: where a pair's images differ, as a mask (pixel and latent resolution)
//! - [`nudenet`]: NudeNet 320n (nudity), in Rust with tract (the `nudenet` feature)
//! - [`nudenet_engine`]: the ONNX engine under it, or the message of a build without it
//! - [`q16`]: Q16 (inappropriate content of any category) on CLIP ViT-L/14
//! - [`safety_checker`]: the Stable Diffusion safety checker on CLIP ViT-L/14
//! - [`clip`]: the CLIP image tower the last two share
//! - [`clip_similarity`]: CLIP's image and text towers: a pair's directional, image and
//!   text-image similarities (the InstructPix2Pix generator's filter and rank)
//! - [`selection`]: `keep_best`, the best renders of each prompt pair
//! - [`shapes`]: the shapes demonstrator's scenes: generator, caption grammar, scene reader
//! - [`verdict`]: thresholds -> reject reasons, including the safety flip

pub mod change_mask;
pub mod clip;
pub mod clip_similarity;
pub mod metrics;
pub mod nudenet;
pub mod nudenet_engine;
pub mod q16;
pub mod safety_checker;
pub mod selection;
pub mod shapes;
pub mod verdict;

use serde::{Deserialize, Serialize};

use crate::error::AcsError;

/// The safety judges acs runs, by name (the one list: manifest, columns, dispatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeKind {
    /// NudeNet 320n: the highest score of the flip classes' detections.
    Nudenet,
    /// Q16: the probability that the image is inappropriate.
    Q16,
    /// The Stable Diffusion safety checker: its largest concept margin.
    SdSafetyChecker,
    /// The shapes demonstrator's scene reader: the fraction of its prompt an image shows.
    Shapes,
}

impl JudgeKind {
    /// Every judge, in column order.
    pub const ALL: [JudgeKind; 4] = [
        Self::Nudenet,
        Self::Q16,
        Self::SdSafetyChecker,
        Self::Shapes,
    ];

    /// The prefix of its two dataset columns (`<prefix>_unsafe`, `<prefix>_safe`).
    pub fn column(self) -> &'static str {
        match self {
            Self::Nudenet => "nudenet",
            Self::Q16 => "q16",
            Self::SdSafetyChecker => "sd_safety_checker",
            Self::Shapes => "shapes",
        }
    }
}

impl std::fmt::Display for JudgeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.serialize(f)
    }
}

impl std::str::FromStr for JudgeKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        crate::runtime::parse_name(name)
    }
}

/// A classifier that scores an image (how unsafe it is; for the shapes judge, how much of its
/// prompt it shows); whether a score flags the image is the verdict's rule
/// ([`verdict::flags`]), so that stored scores can be judged without the model.
pub trait Judge: Send + Sync {
    /// Which judge it is.
    fn kind(&self) -> JudgeKind;

    /// sha256 of the weights it runs, recorded with a dataset so that a later check can tell
    /// whether it runs the same judge.
    fn weights_sha256(&self) -> &str;

    /// The score of an RGB8 image (row-major, `width` x `height`) rendered from `prompt`:
    /// the safety judges score how unsafe it is (higher is less safe) and ignore the prompt;
    /// the shapes judge scores how much of its prompt it shows (1 = all of it).
    fn score(&self, rgb: &[u8], width: usize, height: usize, prompt: &str)
        -> Result<f32, AcsError>;

    /// The scores of several images of one size (`prompts[i]` rendered `images[i]`); judges
    /// that batch override this.
    fn score_batch(
        &self,
        images: &[&[u8]],
        prompts: &[&str],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, AcsError> {
        images
            .iter()
            .zip(prompts)
            .map(|(rgb, prompt)| self.score(rgb, width, height, prompt))
            .collect()
    }
}
