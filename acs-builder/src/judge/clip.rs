//! What the CLIP-based judges share: a vision tower with its preprocessing, loaded from a
//! folder, embedding RGB8 images in batches on the tower's device.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::error::AcsError;
use crate::runtime::fingerprint::fingerprint_files;
use crate::runtime::model::clip_image::ClipImageProcessor;
use crate::runtime::model::clip_vision::{transformers_weights, ClipVision};

/// Images embedded per tower call.
pub const BATCH: usize = 8;

/// A CLIP vision tower and its preprocessing.
pub struct ClipEmbedder {
    tower: ClipVision,
    processor: ClipImageProcessor,
    /// True when the folder has no preprocessor config and CLIP's defaults are used.
    pub default_preprocessing: bool,
    sha256: String,
}

impl ClipEmbedder {
    /// Loads the tower of `dir` (config.json + safetensors) with the preprocessing of
    /// `preprocessor` (a `preprocessor_config.json`; missing: CLIP's defaults).
    pub fn load(
        dir: &Path,
        preprocessor: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, AcsError> {
        let tower = ClipVision::load(dir, dtype, device)?;
        let default_preprocessing = !preprocessor.is_file();
        let processor = if default_preprocessing {
            ClipImageProcessor::default()
        } else {
            ClipImageProcessor::from_file(preprocessor)?
        };
        let (_, h, w) = processor.output_shape(1024, 1024);
        let side = tower.config().image_size;
        if (h, w) != (side, side) {
            return Err(AcsError::input(format!(
                "{}: crops {w}x{h} images, but the tower of {} takes {side}x{side}",
                preprocessor.display(),
                dir.display()
            )));
        }
        let mut files: Vec<PathBuf> = vec![dir.join("config.json")];
        files.extend(transformers_weights(dir)?);
        if !default_preprocessing {
            files.push(preprocessor.to_path_buf());
        }
        let sha256 = fingerprint_files(dir, &files)?;
        Ok(Self {
            tower,
            processor,
            default_preprocessing,
            sha256,
        })
    }

    /// Width of the image embeddings.
    pub fn projection_dim(&self) -> usize {
        self.tower.config().projection_dim
    }

    /// sha256 fingerprint of the config, weights and preprocessor config.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The preprocessed pixel values of an RGB8 image.
    pub fn pixel_values(&self, rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
        self.processor.pixel_values(rgb, width, height)
    }

    /// The image embeddings (projected, not normalised) of RGB8 images of `width` x
    /// `height`, in batches of [`BATCH`].
    pub fn embed(
        &self,
        images: &[&[u8]],
        width: usize,
        height: usize,
    ) -> Result<Vec<Vec<f32>>, AcsError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let pixels: Vec<Vec<f32>> = chunk
                .iter()
                .map(|rgb| self.processor.pixel_values(rgb, width, height))
                .collect();
            out.extend(self.tower.embed(&pixels)?);
        }
        Ok(out)
    }
}

/// `v / max(|v|, 1e-12)` (torch's `normalize`).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// The dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
