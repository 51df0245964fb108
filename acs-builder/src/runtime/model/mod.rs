//! The diffusion runtime's model: loading a diffusers-layout folder (configs from its
//! config.json files, weights from safetensors) and the three networks' forward passes.

pub mod attention_hook;
pub mod blocks;
pub mod clip_encoder;
pub mod clip_image;
pub mod clip_text;
pub mod clip_vision;
pub mod config;
pub mod conv;
pub mod cpu_attention;
pub mod cpu_storage;
#[cfg(target_arch = "x86_64")]
pub mod direct_conv;
pub mod embedded;
pub mod forward;
pub mod gemm;
pub mod layers;
pub mod matmul;
pub mod shapes;
pub mod text_encoder;
pub mod tiny;
pub mod unet;
pub mod vae;
pub mod vector_math;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;

use self::attention_hook::AttentionHook;
use self::config::{
    noise_schedule, text_encoder_config, unet_config, vae_config, JsonConfig, NoiseSchedule,
};
use self::text_encoder::TextEncoder;
use self::unet::{UNet, UNetConfig};
use self::vae::{VaeConfig, VaeDecoder};
use crate::runtime::error::RuntimeError;
use crate::runtime::fingerprint::fingerprint_files;
use crate::runtime::tokenizer::ClipTokenizer;

/// A loaded Stable Diffusion pipeline (text encoder, UNet, VAE, tokenizer, noise schedule).
pub struct StableDiffusion {
    /// The CLIP tokenizer of the model.
    pub tokenizer: ClipTokenizer,
    text_encoder: TextEncoder,
    unet: UNet,
    vae: VaeDecoder,
    /// UNet configuration as read.
    pub unet_config: UNetConfig,
    /// VAE configuration as read.
    pub vae_config: VaeConfig,
    /// Noise schedule of the scheduler config.
    pub schedule: NoiseSchedule,
    /// Weight dtype.
    pub dtype: DType,
    /// Device the networks run on.
    pub device: Device,
    /// Model identifier recorded in every row.
    pub id: String,
    /// sha256 fingerprint of the configs and weights.
    pub sha256: String,
}

/// The weight file of a component: full precision first, then the `.fp16` variant. Pickle
/// files are refused: loading them executes arbitrary code.
fn weight_file(dir: &Path, stem: &str) -> Result<PathBuf, RuntimeError> {
    for name in [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    // Any pickle in the folder (diffusers' `{stem}.bin`, transformers' `pytorch_model.bin`,
    // `.ckpt`, `.pt`): say why it is not used.
    let mut pickles: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("bin" | "ckpt" | "pt" | "pth" | "pkl")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pickles.sort();
    if let Some(pickle) = pickles.first() {
        return Err(RuntimeError::input(format!(
            "{}: pickle checkpoints are refused (unpickling runs arbitrary code); convert it to \
             {stem}.safetensors, e.g. with diffusers' save_pretrained(safe_serialization=True)",
            pickle.display()
        )));
    }
    Err(RuntimeError::input(format!(
        "{}: missing weights {stem}.safetensors",
        dir.display()
    )))
}

fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, RuntimeError> {
    // SAFETY: the file is memory-mapped read-only; acs never writes model files while loading.
    unsafe { weights::mapped_var_builder(&[path.to_path_buf()], dtype, device) }
        .map_err(|e| component_error(path, e))
}

fn component_error(path: &Path, err: candle_core::Error) -> RuntimeError {
    RuntimeError::input(format!(
        "{}: {}",
        path.display(),
        crate::runtime::error::candle_message(&err)
    ))
}

/// The files of a diffusers folder that determine its outputs: configs, weights, tokenizer.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut files = vec![
        dir.join("model_index.json"),
        dir.join("unet/config.json"),
        weight_file(&dir.join("unet"), "diffusion_pytorch_model")?,
        dir.join("vae/config.json"),
        weight_file(&dir.join("vae"), "diffusion_pytorch_model")?,
        dir.join("text_encoder/config.json"),
        weight_file(&dir.join("text_encoder"), "model")?,
        dir.join("scheduler/scheduler_config.json"),
    ];
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(RuntimeError::input(format!(
            "{}: missing",
            missing.display()
        )));
    }
    for name in ["vocab.json", "merges.txt", "tokenizer.json"] {
        let path = dir.join("tokenizer").join(name);
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The model fingerprint (sha256 over its files' contents) without loading any weights.
pub fn model_fingerprint(dir: &Path) -> Result<String, RuntimeError> {
    fingerprint_files(dir, &model_files(dir)?)
}

impl StableDiffusion {
    /// The code path the networks run on now ([`crate::runtime::kernel_path::identity`]),
    /// recorded with every row they render.
    pub fn kernel_path(&self) -> String {
        crate::runtime::kernel_path::identity(&self.device)
    }

    /// Loads a diffusers-layout folder.
    pub fn load(
        dir: &Path,
        dtype: DType,
        device: Device,
        id: Option<String>,
    ) -> Result<Self, RuntimeError> {
        let index = dir.join("model_index.json");
        if !dir.is_dir() {
            return Err(RuntimeError::input(format!(
                "{}: model folder does not exist",
                dir.display()
            )));
        }
        if !index.is_file() {
            return Err(RuntimeError::input(format!(
                "{}: not a diffusers model folder (no model_index.json)",
                dir.display()
            )));
        }
        let index_cfg = JsonConfig::read(&index)?;
        let tokenizer = ClipTokenizer::from_folder(&dir.join("tokenizer"))?;

        let unet_dir = dir.join("unet");
        let unet_config = unet_config(&JsonConfig::read(&unet_dir.join("config.json"))?)?;
        let unet_weights = weight_file(&unet_dir, "diffusion_pytorch_model")?;
        let unet = UNet::new(var_builder(&unet_weights, dtype, &device)?, &unet_config)
            .map_err(|e| component_error(&unet_weights, e))?;

        let vae_dir = dir.join("vae");
        let vae_config = vae_config(&JsonConfig::read(&vae_dir.join("config.json"))?)?;
        if vae_config.latent_channels != unet_config.in_channels {
            return Err(RuntimeError::input(format!(
                "{}: latent_channels {} does not match the UNet's in_channels {}",
                vae_dir.join("config.json").display(),
                vae_config.latent_channels,
                unet_config.in_channels
            )));
        }
        let vae_weights = weight_file(&vae_dir, "diffusion_pytorch_model")?;
        let vae = VaeDecoder::new(var_builder(&vae_weights, dtype, &device)?, &vae_config)
            .map_err(|e| component_error(&vae_weights, e))?;

        let text_dir = dir.join("text_encoder");
        let text_config = text_encoder_config(&JsonConfig::read(&text_dir.join("config.json"))?)?;
        if text_config.hidden_size != unet_config.cross_attention_dim {
            return Err(RuntimeError::input(format!(
                "{}: hidden_size {} does not match the UNet's cross_attention_dim {}",
                text_dir.join("config.json").display(),
                text_config.hidden_size,
                unet_config.cross_attention_dim
            )));
        }
        if text_config.max_position_embeddings < crate::runtime::tokenizer::CONTEXT_LENGTH {
            return Err(RuntimeError::input(format!(
                "{}: max_position_embeddings {} is shorter than the {}-token prompts",
                text_dir.join("config.json").display(),
                text_config.max_position_embeddings,
                crate::runtime::tokenizer::CONTEXT_LENGTH
            )));
        }
        let text_weights = weight_file(&text_dir, "model")?;
        let text_encoder =
            TextEncoder::new(var_builder(&text_weights, dtype, &device)?, &text_config)
                .map_err(|e| component_error(&text_weights, e))?;

        let scheduler_file = dir.join("scheduler/scheduler_config.json");
        let schedule = noise_schedule(&JsonConfig::read(&scheduler_file)?)?;

        let sha256 = model_fingerprint(dir)?;
        let id = match id {
            Some(id) => id,
            None => index_cfg
                .str_or("_name_or_path", "")?
                .to_owned()
                .chars()
                .take(200)
                .collect::<String>(),
        };
        let id = if id.is_empty() {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string())
        } else {
            id
        };
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            vae,
            unet_config,
            vae_config,
            schedule,
            dtype,
            device,
            id,
            sha256,
        })
    }

    /// Latent tensor shape (channels, height, width) for an image size.
    pub fn latent_shape(&self, height: usize, width: usize) -> Result<[usize; 3], RuntimeError> {
        let factor = self.vae_config.downscale();
        if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
            return Err(RuntimeError::input(format!(
                "image size {height}x{width} is not a multiple of the VAE's downscale factor {factor}"
            )));
        }
        Ok([
            self.unet_config.in_channels,
            height / factor,
            width / factor,
        ])
    }

    /// CLIP last hidden states for a batch of padded token id rows: [n, 77, hidden].
    pub fn encode_text(&self, token_rows: &[Vec<u32>]) -> Result<Tensor, RuntimeError> {
        let run = || -> candle_core::Result<Tensor> {
            let n = token_rows.len();
            let width = token_rows.first().map(Vec::len).unwrap_or(0);
            let flat: Vec<u32> = token_rows.iter().flatten().copied().collect();
            let ids = Tensor::from_vec(flat, (n, width), &self.device)?;
            self.text_encoder.forward(&ids)?.to_dtype(DType::F32)
        };
        run().map_err(|e| RuntimeError::candle("text encoder", e))
    }

    /// One UNet evaluation: noise (or v) prediction for `latents` at timestep `t`.
    pub fn unet_forward(
        &self,
        latents: &Tensor,
        t: f64,
        context: &Tensor,
    ) -> Result<Tensor, RuntimeError> {
        self.unet_forward_controlled(latents, t, context, None)
    }

    /// As [`Self::unet_forward`], with every attention layer asking `hook` first (attention
    /// control).
    pub fn unet_forward_controlled(
        &self,
        latents: &Tensor,
        t: f64,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
    ) -> Result<Tensor, RuntimeError> {
        let run = || -> candle_core::Result<Tensor> {
            let latents = latents.to_dtype(self.dtype)?;
            let context = context.to_dtype(self.dtype)?;
            self.unet
                .forward_controlled(&latents, t, &context, hook)?
                .to_dtype(DType::F32)
        };
        run().map_err(|e| RuntimeError::candle("UNet", e))
    }

    /// Decodes final latents [n, c, h, w] to images in [-1, 1] (f32, unclamped), a few
    /// images per VAE call so that large images stay within memory.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor, RuntimeError> {
        let run = || -> candle_core::Result<Tensor> {
            let (n, _, h, w) = latents.dims4()?;
            let factor = self.vae_config.downscale();
            let per_call = (DECODE_PIXELS / (h * w * factor * factor)).clamp(1, n.max(1));
            let mut parts = Vec::with_capacity(n.div_ceil(per_call));
            for start in (0..n).step_by(per_call) {
                let len = per_call.min(n - start);
                let scaled = (latents.narrow(0, start, len)? / self.vae_config.scaling_factor)?
                    .to_dtype(self.dtype)?;
                parts.push(self.vae.decode(&scaled)?.to_dtype(DType::F32)?);
            }
            Tensor::cat(&parts, 0)
        };
        run().map_err(|e| RuntimeError::candle("VAE decode", e))
    }

    /// Decodes final latents [n, c, h, w] to RGB8 images (row-major HWC), as diffusers'
    /// image processor does: (x / 2 + 0.5) clamped to [0, 1], times 255, rounded.
    pub fn decode_images(&self, latents: &Tensor) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let images = self.decode_latents(latents)?;
        let run = || -> candle_core::Result<Vec<Vec<u8>>> {
            let images = ((images / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
            let images = (images * 255.0)?.round()?.to_dtype(DType::U8)?;
            (0..images.dim(0)?)
                .map(|i| {
                    images
                        .i(i)?
                        .permute((1, 2, 0))?
                        .flatten_all()?
                        .to_vec1::<u8>()
                })
                .collect()
        };
        run().map_err(|e| RuntimeError::candle("VAE decode", e))
    }
}

/// Output pixels decoded per VAE call (2^18: one 512×512 image, four 256×256 ones). The
/// decoder's activations at full resolution (128 channels of float32, several alive at once)
/// set a build's peak memory: a full SD 1.5 pair at 512 px peaked at 7.0 GiB decoding its two
/// images in one call (docs/performance.md). The bits do not depend on the split.
const DECODE_PIXELS: usize = 1 << 18;

#[cfg(test)]
mod tests {
    use super::*;

    /// Replay re-renders one pair at a time what a build rendered several pairs per batch, so
    /// the UNet and the VAE must give the same bits for a row whatever the batch around it
    /// (odd batches take the convolution's one-image-at-a-time path, even ones its
    /// image-parallel path).
    #[test]
    fn outputs_do_not_depend_on_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        tiny::write_tiny_model(dir.path()).unwrap();
        let model = StableDiffusion::load(dir.path(), DType::F32, Device::Cpu, None).unwrap();
        let rows = 6;
        let prompts = ["a red apple", "a green apple", "a cat on a sofa"];
        let tokens: Vec<Vec<u32>> = (0..rows)
            .map(|i| model.tokenizer.encode(prompts[i % 3]).unwrap().ids)
            .collect();
        let context = model.encode_text(&tokens).unwrap();
        let [c, h, w] = model.latent_shape(64, 64).unwrap();
        let values: Vec<f32> = (0..rows * c * h * w)
            .map(|i| (i as f32 * 0.618).sin())
            .collect();
        let latents = Tensor::from_vec(values, (rows, c, h, w), &Device::Cpu).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let flat: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            flat.iter().map(|v| v.to_bits()).collect()
        };
        let whole = model.unet_forward(&latents, 481.0, &context).unwrap();
        let decoded = model.decode_latents(&latents).unwrap();
        for (start, len) in [(0, 1), (1, 1), (2, 3), (2, 4)] {
            let part = |t: &Tensor| t.narrow(0, start, len).unwrap();
            let unet = model
                .unet_forward(&part(&latents), 481.0, &part(&context))
                .unwrap();
            assert_eq!(bits(&unet), bits(&part(&whole)), "UNet rows {start}+{len}");
            let vae = model.decode_latents(&part(&latents)).unwrap();
            assert_eq!(bits(&vae), bits(&part(&decoded)), "VAE rows {start}+{len}");
        }
    }
}
