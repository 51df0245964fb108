//! The typed row of schema v1: one aligned (unsafe, safe) pair.
//!
//! Binary fields (PNG bytes, latents) serialize to JSON as lowercase hex strings, which keeps
//! `serde_json` dumps of records readable enough for debugging.

use serde::{Deserialize, Serialize};

/// Hugging Face `Image` feature value: PNG bytes plus an optional file name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBlob {
    /// The encoded image (PNG).
    #[serde(with = "hex_bytes")]
    pub bytes: Vec<u8>,
    /// An optional file name for the image (e.g. `"{pair_id}-unsafe.png"`).
    pub path: Option<String>,
}

impl ImageBlob {
    /// An image with the given encoded bytes and no path.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, path: None }
    }
}

/// One row of schema v1: an unsafe prompt and its minimally edited safe counterpart, rendered
/// from the same seed and initial latent. Field meanings are those of the "Schema v1" table of the
/// spec; columns appear in the Parquet files in this field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// Stable hash of (prompts, seed, model sha256, sampling + alignment config).
    pub pair_id: String,
    /// `train`, `validation` or `test`, derived from `pair_id`.
    pub split: String,
    /// Harm category, e.g. `sexual`, `violence`.
    pub category: String,
    /// The unsafe terms that the edit replaced.
    pub concepts: Vec<String>,
    /// The prompt containing the unsafe concept.
    pub unsafe_prompt: String,
    /// The minimally edited safe counterpart.
    pub safe_prompt: String,
    /// The negative prompt used for both images.
    pub negative_prompt: String,
    /// CLIP-token edit distance between the two prompts.
    pub token_edit_distance: i32,
    /// The sampling seed shared by both images.
    pub seed: u64,
    /// sha256 (lowercase hex) of the initial latent bytes, shared by both images.
    pub x_t_sha256: String,
    /// Model identifier (hub id or local name).
    pub model_id: String,
    /// sha256 fingerprint of the model weights.
    pub model_sha256: String,
    /// Scheduler name, e.g. `ddim`.
    pub scheduler: String,
    /// `shared-latent` or `prompt-switch`.
    pub alignment_mode: String,
    /// Number of denoising steps.
    pub steps: i32,
    /// Number of shared steps before the fork (prompt-switch mode).
    pub switch_step: i32,
    /// Image height in pixels.
    pub height: i32,
    /// Image width in pixels.
    pub width: i32,
    /// Classifier-free guidance scale.
    pub guidance_scale: f32,
    /// The image rendered from the unsafe prompt.
    pub unsafe_image: ImageBlob,
    /// The image rendered from the safe prompt.
    pub safe_image: ImageBlob,
    /// Shape of the latents, e.g. `[4, 64, 64]`.
    pub latent_shape: Vec<i32>,
    /// Final unsafe latent, float16 little-endian; `None` if latents are not stored.
    #[serde(with = "hex_opt_bytes")]
    pub unsafe_latent: Option<Vec<u8>>,
    /// Final safe latent, float16 little-endian; `None` if latents are not stored.
    #[serde(with = "hex_opt_bytes")]
    pub safe_latent: Option<Vec<u8>>,
    /// Structural similarity of the two images.
    pub ssim: f32,
    /// Peak signal-to-noise ratio between the two images (dB).
    pub psnr: f32,
    /// Fraction of pixels that changed between the two images.
    pub changed_area: f32,
    /// Box around the changed pixels, `[x0, y0, x1, y1]` (end exclusive); null when no pixel
    /// changed.
    pub changed_box: Option<Vec<i32>>,
    /// Cosine similarity of the two final latents.
    pub latent_cosine: f32,
    /// Max exposed-class NudeNet score of the unsafe image; `None` without a detector.
    pub nudenet_unsafe: Option<f32>,
    /// Max exposed-class NudeNet score of the safe image; `None` without a detector.
    pub nudenet_safe: Option<f32>,
    /// Q16's probability that the unsafe image is inappropriate; `None` when Q16 did not run.
    pub q16_unsafe: Option<f32>,
    /// Q16's probability that the safe image is inappropriate.
    pub q16_safe: Option<f32>,
    /// The Stable Diffusion safety checker's largest concept margin on the unsafe image
    /// (positive: an NSFW concept); `None` when the checker did not run.
    pub sd_safety_checker_unsafe: Option<f32>,
    /// The safety checker's largest concept margin on the safe image.
    pub sd_safety_checker_safe: Option<f32>,
    /// Where the two images differ: a 1-bit greyscale PNG of the image's size, white where a
    /// pixel changed (see the spec's "Training outputs"); `None` unless masks were asked for.
    #[serde(default)]
    pub change_mask: Option<ImageBlob>,
    /// The change mask at latent resolution: one byte (0 or 1) per latent pixel, row-major,
    /// `latent_shape[1] x latent_shape[2]`; 1 where any pixel of the latent pixel's block changed.
    #[serde(default, with = "hex_opt_bytes")]
    pub change_mask_latent: Option<Vec<u8>>,
    /// The recorded denoising step indices (0-based, ascending); `None` when none were recorded.
    #[serde(default)]
    pub trajectory_steps: Option<Vec<i32>>,
    /// The scheduler timestep the UNet saw at each recorded step.
    #[serde(default)]
    pub trajectory_timesteps: Option<Vec<i32>>,
    /// The unsafe branch's latent x_k at each recorded step (before the scheduler's input
    /// scaling), float16 little-endian, `[steps, *latent_shape]`.
    #[serde(default, with = "hex_opt_bytes")]
    pub trajectory_latents: Option<Vec<u8>>,
    /// The guided UNet output of the unsafe prompt at each recorded x_k (same layout).
    #[serde(default, with = "hex_opt_bytes")]
    pub trajectory_eps_unsafe: Option<Vec<u8>>,
    /// The guided UNet output of the safe prompt at the same x_k: the counterfactual target.
    #[serde(default, with = "hex_opt_bytes")]
    pub trajectory_eps_safe: Option<Vec<u8>>,
    /// Whether the pair passes the manifest's thresholds.
    pub valid: bool,
    /// Why the pair is not valid (empty when valid).
    pub reject_reasons: Vec<String>,
    /// Version of acs that wrote the row.
    pub acs_version: String,
    /// The code path that rendered the row (`cpu-avx512`, `cpu-avx2`, `cpu-generic`, or a GPU's
    /// `cuda-sm<NN> <name>`): re-renders on the same path give the same bits. `None` for rows
    /// written before acs recorded it.
    #[serde(default)]
    pub kernel_path: Option<String>,
    /// The shapes judge's score of the unsafe image: the fraction of its prompt's attributes
    /// (object count, background, each object's colour, shape and position) that the image
    /// shows; `None` when the judge did not run (it reads the shapes demonstrator's scenes).
    #[serde(default)]
    pub shapes_unsafe: Option<f32>,
    /// The shapes judge's score of the safe image against the safe prompt.
    #[serde(default)]
    pub shapes_safe: Option<f32>,
    /// Attention mode: the pair's control settings, compactly (e.g.
    /// `map=swap;cross=0-0.8;self=0-0.4;blend=0.3@0.2`); `None` in the other modes.
    #[serde(default)]
    pub alignment_settings: Option<String>,
    /// Attention mode with a local blend: the last blend mask, one byte (0 or 1) per latent
    /// pixel, row-major, `latent_shape[1] x latent_shape[2]`; outside it the safe latent is the
    /// unsafe latent bit for bit.
    #[serde(default, with = "hex_opt_bytes")]
    pub blend_mask: Option<Vec<u8>>,
    /// CLIP directional similarity, cos(image_safe − image_unsafe, text_safe − text_unsafe) of
    /// the normalised embeddings (the InstructPix2Pix generator's); `None` when CLIP
    /// similarity did not run, and in benign rows.
    #[serde(default)]
    pub clip_direction: Option<f32>,
    /// cos(image_unsafe, image_safe) of the CLIP image embeddings; `None` as `clip_direction`.
    #[serde(default)]
    pub clip_image: Option<f32>,
    /// cos(image_unsafe, text_unsafe); `None` when CLIP similarity did not run.
    #[serde(default)]
    pub clip_unsafe: Option<f32>,
    /// cos(image_safe, text_safe); `None` when CLIP similarity did not run.
    #[serde(default)]
    pub clip_safe: Option<f32>,
    /// `blend_mask` upsampled to the image (nearest: each latent pixel covers its block of
    /// pixels), a 1-bit greyscale PNG, white inside the mask; `None` unless masks were asked
    /// for (`[output] masks`) and the row has a blend mask.
    #[serde(default)]
    pub blend_mask_image: Option<ImageBlob>,
}

/// serde helpers: `Vec<u8>` as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// serde helpers: `Option<Vec<u8>>` as a lowercase hex string or null.
mod hex_opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| hex::decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Records used by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A record with every optional field set, distinct per `i`.
    pub fn full(i: usize) -> PairRecord {
        PairRecord {
            pair_id: format!("{i:016x}"),
            split: "train".into(),
            category: "violence".into(),
            concepts: vec!["gun".into(), format!("blood{i}")],
            unsafe_prompt: format!("a man holding a gun {i}"),
            safe_prompt: format!("a man holding a flower {i}"),
            negative_prompt: String::new(),
            token_edit_distance: 1,
            seed: u64::MAX - i as u64,
            x_t_sha256: "ab".repeat(32),
            model_id: "acs/tiny".into(),
            model_sha256: "cd".repeat(32),
            scheduler: "ddim".into(),
            alignment_mode: "prompt-switch".into(),
            steps: 25,
            switch_step: 10,
            height: 64,
            width: 64,
            guidance_scale: 7.5,
            unsafe_image: ImageBlob {
                bytes: vec![0x89, b'P', b'N', b'G', i as u8, 1, 2, 3],
                path: Some(format!("{i}-unsafe.png")),
            },
            safe_image: ImageBlob {
                bytes: vec![0x89, b'P', b'N', b'G', i as u8, 4, 5],
                path: Some(format!("{i}-safe.png")),
            },
            latent_shape: vec![4, 8, 8],
            unsafe_latent: Some(vec![i as u8; 16]),
            safe_latent: Some(vec![7; 16]),
            ssim: 0.9,
            psnr: 31.5,
            changed_area: 0.125,
            changed_box: Some(vec![3, 4, 40, 28]),
            latent_cosine: 0.99,
            nudenet_unsafe: Some(0.8),
            nudenet_safe: Some(0.1),
            q16_unsafe: Some(0.93),
            q16_safe: Some(0.04),
            sd_safety_checker_unsafe: Some(0.012),
            sd_safety_checker_safe: Some(-0.041),
            change_mask: Some(ImageBlob {
                bytes: vec![0x89, b'P', b'N', b'G', i as u8, 9],
                path: Some(format!("{i}-mask.png")),
            }),
            change_mask_latent: Some([0, 1, 1, 0].repeat(16)),
            trajectory_steps: Some(vec![0, 5, 20]),
            trajectory_timesteps: Some(vec![981, 781, 181]),
            trajectory_latents: Some(vec![i as u8; 3 * 2 * 256]),
            trajectory_eps_unsafe: Some(vec![3; 3 * 2 * 256]),
            trajectory_eps_safe: Some(vec![4; 3 * 2 * 256]),
            valid: true,
            reject_reasons: vec![],
            acs_version: "0.1.0".into(),
            kernel_path: Some("cpu-avx2".into()),
            shapes_unsafe: Some(1.0),
            shapes_safe: Some(0.75),
            alignment_settings: Some("map=swap;cross=0-0.8;self=0-0.4;blend=0.3@0.2".into()),
            blend_mask: Some([1, 0, 0, 1].repeat(16)),
            clip_direction: Some(0.25),
            clip_image: Some(0.8),
            clip_unsafe: Some(0.3),
            clip_safe: Some(0.31),
            blend_mask_image: Some(ImageBlob {
                bytes: vec![0x89, b'P', b'N', b'G', i as u8, 7],
                path: Some(format!("{i}-blend-mask.png")),
            }),
        }
    }

    /// A record with all nullable fields null and all lists empty.
    pub fn sparse(i: usize) -> PairRecord {
        PairRecord {
            split: "test".into(),
            concepts: vec![],
            latent_shape: vec![],
            unsafe_image: ImageBlob::new(vec![]),
            safe_image: ImageBlob::new(vec![1]),
            unsafe_latent: None,
            safe_latent: None,
            changed_box: None,
            nudenet_unsafe: None,
            nudenet_safe: None,
            q16_unsafe: None,
            q16_safe: None,
            sd_safety_checker_unsafe: None,
            sd_safety_checker_safe: None,
            change_mask: None,
            change_mask_latent: None,
            trajectory_steps: None,
            trajectory_timesteps: None,
            trajectory_latents: None,
            trajectory_eps_unsafe: None,
            trajectory_eps_safe: None,
            shapes_unsafe: None,
            shapes_safe: None,
            alignment_settings: None,
            blend_mask: None,
            clip_direction: None,
            clip_image: None,
            clip_unsafe: None,
            clip_safe: None,
            blend_mask_image: None,
            valid: false,
            reject_reasons: vec!["ssim below 0.5".into(), "no flip".into()],
            ..full(i)
        }
    }

    /// `n` records, every third one sparse, the others full.
    pub fn mixed(n: usize) -> Vec<PairRecord> {
        (0..n)
            .map(|i| if i % 3 == 1 { sparse(i) } else { full(i) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_uses_hex_for_binary() {
        for r in [fixtures::full(1), fixtures::sparse(2)] {
            let text = serde_json::to_string(&r).unwrap();
            let back: PairRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back, r);
        }
        let v = serde_json::to_value(fixtures::full(1)).unwrap();
        assert_eq!(v["unsafe_image"]["bytes"], "89504e4701010203");
        assert_eq!(v["safe_latent"], "07".repeat(16));
        assert!(serde_json::to_value(fixtures::sparse(1)).unwrap()["safe_latent"].is_null());
    }
}
