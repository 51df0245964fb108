//! CLIP similarity of a pair, as the InstructPix2Pix data generator filters and ranks its
//! pairs (Brooks et al., CVPR 2023; `metrics/clip_similarity.py` of timothybrooks/
//! instruct-pix2pix): with the image and text embeddings each normalised,
//!
//! - `clip_unsafe` = cos(image_unsafe, text_unsafe), `clip_safe` = cos(image_safe, text_safe)
//!   (does each image show its prompt),
//! - `clip_image` = cos(image_unsafe, image_safe) (are the two images still one scene),
//! - `clip_direction` = cos(image_safe − image_unsafe, text_safe − text_unsafe) (did the image
//!   change the way the prompt did).
//!
//! The towers are a transformers `CLIPModel` folder's (by default OpenAI's ViT-L/14, the
//! generator's model), with the folder's tokenizer and image preprocessing.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::clip::{dot, normalized, ClipEmbedder, BATCH};
use crate::error::AcsError;
use crate::runtime::fingerprint::fingerprint_files;
use crate::runtime::model::clip_text::ClipTextTower;
use crate::runtime::model::clip_vision::transformers_weights;
use crate::runtime::ClipTokenizer;

/// The tokenizer files of a transformers folder that the fingerprint covers when present.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The four similarities of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClipScores {
    /// cos(image_safe − image_unsafe, text_safe − text_unsafe); `None` for a benign row (one
    /// prompt, one image: no direction).
    pub direction: Option<f32>,
    /// cos(image_unsafe, image_safe); `None` for a benign row.
    pub image: Option<f32>,
    /// cos(image_unsafe, text_unsafe).
    pub unsafe_text: f32,
    /// cos(image_safe, text_safe).
    pub safe_text: f32,
}

/// `x · y / max(|x| |y|, 1e-8)` (torch's `cosine_similarity`).
pub fn cosine(x: &[f32], y: &[f32]) -> f32 {
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
    dot(x, y) / (norm(x) * norm(y)).max(1e-8)
}

/// The similarities of a pair from its embeddings (projected, not normalised); `benign`: one
/// prompt rendered once.
pub fn pair_scores(
    image_unsafe: &[f32],
    image_safe: &[f32],
    text_unsafe: &[f32],
    text_safe: &[f32],
    benign: bool,
) -> ClipScores {
    let (iu, is) = (normalized(image_unsafe), normalized(image_safe));
    let (tu, ts) = (normalized(text_unsafe), normalized(text_safe));
    let difference =
        |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    ClipScores {
        direction: (!benign).then(|| cosine(&difference(&is, &iu), &difference(&ts, &tu))),
        image: (!benign).then(|| cosine(&iu, &is)),
        unsafe_text: cosine(&iu, &tu),
        safe_text: cosine(&is, &ts),
    }
}

/// CLIP's two towers, its tokenizer and its image preprocessing.
pub struct ClipSimilarity {
    images: ClipEmbedder,
    text: ClipTextTower,
    tokenizer: ClipTokenizer,
    sha256: String,
}

impl ClipSimilarity {
    /// Loads a `CLIPModel` folder: config.json, safetensors weights with both towers, the
    /// tokenizer files (absent: CLIP's own vocabulary, built into acs) and
    /// `preprocessor_config.json` (absent: CLIP's default preprocessing).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, AcsError> {
        let images = ClipEmbedder::load(dir, &dir.join("preprocessor_config.json"), dtype, device)?;
        let text = ClipTextTower::load(dir, dtype, device)?;
        if text.config().projection_dim != images.projection_dim() {
            return Err(AcsError::input(format!(
                "{}: projects texts to {} and images to {} dimensions",
                dir.display(),
                text.config().projection_dim,
                images.projection_dim()
            )));
        }
        let tokenizer = ClipTokenizer::from_folder(dir)?;
        let mut files: Vec<PathBuf> = vec![dir.join("config.json")];
        files.extend(transformers_weights(dir)?);
        files.extend(
            std::iter::once("preprocessor_config.json")
                .chain(TOKENIZER_FILES)
                .map(|name| dir.join(name))
                .filter(|path| path.is_file()),
        );
        let sha256 = fingerprint_files(dir, &files)?;
        Ok(Self {
            images,
            text,
            tokenizer,
            sha256,
        })
    }

    /// sha256 fingerprint of the config, weights, tokenizer and preprocessor files.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// True when the folder has no preprocessor config and CLIP's defaults are used.
    pub fn default_preprocessing(&self) -> bool {
        self.images.default_preprocessing
    }

    /// The text embeddings (projected, not normalised) of prompts, in batches of [`BATCH`].
    pub fn embed_texts(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, AcsError> {
        let mut out = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(BATCH) {
            let ids = chunk
                .iter()
                .map(|prompt| Ok(self.tokenizer.encode(prompt)?.ids))
                .collect::<Result<Vec<_>, AcsError>>()?;
            out.extend(self.text.embed(&ids)?);
        }
        Ok(out)
    }

    /// The image embeddings (projected, not normalised) of RGB8 images of one size.
    pub fn embed_images(
        &self,
        images: &[&[u8]],
        width: usize,
        height: usize,
    ) -> Result<Vec<Vec<f32>>, AcsError> {
        self.images.embed(images, width, height)
    }

    /// The similarities of pairs of RGB8 images of one size (`images[i]` = (unsafe, safe),
    /// rendered from `prompts[i]`); a pair with one prompt is a benign row.
    pub fn score_pairs(
        &self,
        images: &[(&[u8], &[u8])],
        prompts: &[(&str, &str)],
        width: usize,
        height: usize,
    ) -> Result<Vec<ClipScores>, AcsError> {
        let flat_images: Vec<&[u8]> = images.iter().flat_map(|(u, s)| [*u, *s]).collect();
        let flat_prompts: Vec<&str> = prompts.iter().flat_map(|(u, s)| [*u, *s]).collect();
        let image_embeds = self.embed_images(&flat_images, width, height)?;
        let text_embeds = self.embed_texts(&flat_prompts)?;
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(i, (u, s))| {
                pair_scores(
                    &image_embeds[2 * i],
                    &image_embeds[2 * i + 1],
                    &text_embeds[2 * i],
                    &text_embeds[2 * i + 1],
                    u == s,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_scores_follow_the_generators_formula() {
        let (iu, is) = ([1.0, 0.0, 0.0], [0.0, 2.0, 0.0]);
        let (tu, ts) = ([3.0, 0.0, 0.0], [0.0, 0.0, 1.0]);
        let s = pair_scores(&iu, &is, &tu, &ts, false);
        assert_eq!(s.image, Some(0.0));
        assert_eq!((s.unsafe_text, s.safe_text), (1.0, 0.0));
        // (0,1,0) - (1,0,0) against (0,0,1) - (1,0,0): 1 / (sqrt2 sqrt2).
        assert!((s.direction.unwrap() - 0.5).abs() < 1e-6);
        let benign = pair_scores(&iu, &iu, &tu, &tu, true);
        assert_eq!((benign.direction, benign.image), (None, None));
        assert_eq!(benign.unsafe_text, benign.safe_text);
        // Identical embeddings: no direction to compare, torch's eps gives 0.
        assert_eq!(cosine(&[0.0; 3], &[1.0, 0.0, 0.0]), 0.0);
    }
}
