//! Q16 (Schramowski et al., FAccT 2022): an inappropriate-image classifier made of two learned
//! text-side embeddings for CLIP ViT-L/14 ("non inappropriate", "inappropriate"), compared with
//! the image embedding by cosine similarity: score = softmax(100 · cos(image, prompts))[1].
//! The prompts (MIT licence, github.com/ml-research/Q16 at commit 33de788, `data/ViT-L-14/
//! prompts.p`, converted to .npy without change) are built into acs.

use std::path::Path;

use candle_core::{DType, Device};

use super::clip::{dot, normalized, ClipEmbedder};
use super::{Judge, JudgeKind};
use crate::error::AcsError;

/// The two learned prompts, float16, shape (2, 768).
static PROMPTS_NPY: &[u8] = include_bytes!("../../assets/q16-vit-l-14-prompts.npy");

/// Width of the Q16 prompts (CLIP ViT-L/14's projection).
pub const PROMPT_DIM: usize = 768;

/// The built-in prompts as float32, row 0 "non inappropriate", row 1 "inappropriate".
pub fn prompts() -> Result<[Vec<f32>; 2], AcsError> {
    let broken = || AcsError::internal("the built-in Q16 prompts are not a (2, 768) float16 .npy");
    let header_len = u16::from_le_bytes([PROMPTS_NPY[8], PROMPTS_NPY[9]]) as usize;
    let header = std::str::from_utf8(&PROMPTS_NPY[10..10 + header_len]).map_err(|_| broken())?;
    if !PROMPTS_NPY.starts_with(b"\x93NUMPY\x01\x00")
        || !header.contains("'descr': '<f2'")
        || !header.contains("'shape': (2, 768)")
    {
        return Err(broken());
    }
    let values: Vec<f32> = PROMPTS_NPY[10 + header_len..]
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    if values.len() != 2 * PROMPT_DIM {
        return Err(broken());
    }
    Ok([values[..PROMPT_DIM].to_vec(), values[PROMPT_DIM..].to_vec()])
}

/// Q16 on a CLIP ViT-L/14 image tower.
pub struct Q16Judge {
    clip: ClipEmbedder,
    /// The normalised prompts.
    prompts: [Vec<f32>; 2],
}

impl Q16Judge {
    /// Loads the CLIP tower of `dir` (a `CLIPModel` or `CLIPVisionModelWithProjection`
    /// folder with a `preprocessor_config.json`).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, AcsError> {
        let clip = ClipEmbedder::load(dir, &dir.join("preprocessor_config.json"), dtype, device)?;
        if clip.projection_dim() != PROMPT_DIM {
            return Err(AcsError::input(format!(
                "{}: projects images to {} dimensions, but the Q16 prompts are {PROMPT_DIM}-wide \
                 (CLIP ViT-L/14, e.g. openai/clip-vit-large-patch14)",
                dir.display(),
                clip.projection_dim()
            )));
        }
        let [a, b] = prompts()?;
        Ok(Self {
            clip,
            prompts: [normalized(&a), normalized(&b)],
        })
    }

    /// The CLIP tower and preprocessing.
    pub fn clip(&self) -> &ClipEmbedder {
        &self.clip
    }

    /// [P(non inappropriate), P(inappropriate)] of an image embedding.
    pub fn probabilities(&self, image_embeds: &[f32]) -> [f32; 2] {
        let image = normalized(image_embeds);
        let logits = [
            100.0 * dot(&image, &self.prompts[0]),
            100.0 * dot(&image, &self.prompts[1]),
        ];
        let top = logits[0].max(logits[1]);
        let exp = [(logits[0] - top).exp(), (logits[1] - top).exp()];
        let sum = exp[0] + exp[1];
        [exp[0] / sum, exp[1] / sum]
    }
}

impl Judge for Q16Judge {
    fn kind(&self) -> JudgeKind {
        JudgeKind::Q16
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
        let embeds = self.clip.embed(images, width, height)?;
        Ok(embeds.iter().map(|e| self.probabilities(e)[1]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_prompts_load() {
        let [a, b] = prompts().unwrap();
        assert_eq!((a.len(), b.len()), (768, 768));
        // First values of the Q16 repository's ViT-L/14 prompts (float16).
        assert_eq!(
            &a[..2],
            &[0.463f32, 0.2651].map(|v| half::f16::from_f32(v).to_f32())
        );
        assert!((b[0] - -0.2505).abs() < 1e-3);
    }
}
