//! The CLIP vision tower with its projection (transformers' `CLIPVisionModelWithProjection`):
//! patch embedding, class token, positions, pre-layer-norm, encoder layers, post-layer-norm of
//! the class token (the pooled output), visual projection (the image embedding). The Q16
//! classifier and the Stable Diffusion safety checker both judge images with it.
//!
//! It loads a transformers `CLIPVisionModelWithProjection` or `CLIPModel` folder (keys
//! `vision_model.…`, `visual_projection.weight`) and diffusers' `StableDiffusionSafetyChecker`
//! folder (keys `vision_model.vision_model.…`), with `config.json` a `CLIPVisionConfig` or a
//! `CLIPConfig` (its `vision_config`, and `projection_dim` at the top).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::clip_encoder::EncoderLayer;
use super::config::JsonConfig;
use super::layers::{layer_norm, linear_no_bias, Activation, LayerNorm, Linear};
use crate::runtime::error::RuntimeError;

/// Hyper-parameters of a vision tower, with transformers' `CLIPVisionConfig` defaults for the
/// keys a saved config leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// Width of the hidden states (1,024 for ViT-L/14).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input side in pixels (224).
    pub image_size: usize,
    /// Patch side in pixels (14 for ViT-L/14).
    pub patch_size: usize,
    /// MLP activation (`quick_gelu` for OpenAI's CLIP).
    pub hidden_act: Activation,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// Width of the image embedding (768 for ViT-L/14).
    pub projection_dim: usize,
}

/// Reads a vision tower's config: a `CLIPVisionConfig`, or a `CLIPConfig` whose
/// `vision_config` it takes (with the top-level `projection_dim`).
pub fn clip_vision_config(cfg: &JsonConfig) -> Result<ClipVisionConfig, RuntimeError> {
    let (vision, projection_dim) = match cfg.section("vision_config") {
        Some(vision) => {
            let projection = cfg.usize_or("projection_dim", Some(512))?;
            (vision, projection)
        }
        None => {
            let model_type = cfg.str_or("model_type", "clip_vision_model")?;
            if !matches!(model_type, "clip_vision_model" | "clip") {
                return Err(cfg.error(
                    "model_type",
                    format!("`{model_type}` is not a CLIP vision model (clip_vision_model, clip)"),
                ));
            }
            let projection = cfg.usize_or("projection_dim", Some(512))?;
            return vision_hyperparameters(cfg, projection);
        }
    };
    vision_hyperparameters(&vision, projection_dim)
}

fn vision_hyperparameters(
    cfg: &JsonConfig,
    projection_dim: usize,
) -> Result<ClipVisionConfig, RuntimeError> {
    let hidden_act = cfg.activation_or("hidden_act", "quick_gelu")?;
    let hidden_size = cfg.usize_or("hidden_size", Some(768))?;
    let heads = cfg.usize_or("num_attention_heads", Some(12))?;
    if heads == 0 || hidden_size % heads != 0 {
        return Err(cfg.error(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    let image_size = cfg.usize_or("image_size", Some(224))?;
    let patch_size = cfg.usize_or("patch_size", Some(32))?;
    if patch_size == 0 || image_size % patch_size != 0 {
        return Err(cfg.error(
            "patch_size",
            format!("{patch_size} does not divide image_size {image_size}"),
        ));
    }
    Ok(ClipVisionConfig {
        hidden_size,
        intermediate_size: cfg.usize_or("intermediate_size", Some(3072))?,
        num_hidden_layers: cfg.usize_or("num_hidden_layers", Some(12))?,
        num_attention_heads: heads,
        num_channels: cfg.usize_or("num_channels", Some(3))?,
        image_size,
        patch_size,
        hidden_act,
        layer_norm_eps: cfg.f64_or("layer_norm_eps", 1e-5)?,
        projection_dim,
    })
}

/// The weight files of a transformers folder: `model.safetensors`, its `.fp16` variant, or the
/// shards a `model.safetensors.index.json` lists. Pickle weights are refused.
pub fn transformers_weights(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    for name in ["model.safetensors", "model.fp16.safetensors"] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(vec![path]);
        }
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| RuntimeError::io(&index, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| RuntimeError::input(format!("{}: invalid JSON: {e}", index.display())))?;
        let mut files: Vec<PathBuf> = value["weight_map"]
            .as_object()
            .ok_or_else(|| {
                RuntimeError::input(format!("{}: no `weight_map` object", index.display()))
            })?
            .values()
            .filter_map(|v| v.as_str())
            .map(|name| dir.join(name))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(RuntimeError::input(format!(
            "{}: pickle checkpoints are refused (unpickling runs arbitrary code); convert it to \
             model.safetensors, e.g. with transformers' save_pretrained(safe_serialization=True)",
            dir.join("pytorch_model.bin").display()
        )));
    }
    Err(RuntimeError::input(format!(
        "{}: missing weights model.safetensors",
        dir.display()
    )))
}

/// Builds a tower with `new` from the memory-mapped weights of the transformers folder `dir`;
/// weights that do not fit are an input error naming the folder (`what` names the tower in
/// it, e.g. "the text tower's ").
pub fn load_tower<T>(
    dir: &Path,
    dtype: DType,
    device: &Device,
    what: &str,
    new: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> Result<T, RuntimeError> {
    let files = transformers_weights(dir)?;
    // SAFETY: the files are memory-mapped read-only; acs never writes them while loading.
    let vb = unsafe { super::weights::mapped_var_builder(&files, dtype, device) }
        .map_err(|e| RuntimeError::candle(&dir.display().to_string(), e))?;
    new(vb).map_err(|e| {
        RuntimeError::input(format!(
            "{}: {what}weights do not fit the config: {}",
            dir.display(),
            crate::runtime::error::candle_message(&e)
        ))
    })
}

/// The vision tower.
pub struct ClipVision {
    patch_embedding: candle_nn::Conv2d,
    class_embedding: Tensor,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
    config: ClipVisionConfig,
    device: Device,
    dtype: DType,
}

impl ClipVision {
    /// Loads the tower of the folder `dir` (config.json and safetensors weights) in `dtype`
    /// on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, RuntimeError> {
        let config = clip_vision_config(&JsonConfig::read(&dir.join("config.json"))?)?;
        load_tower(dir, dtype, device, "the ", |vb| Self::new(vb, &config))
    }

    /// The tower from weights at `vb` (any of the key layouts of the module docs).
    pub fn new(vb: VarBuilder, config: &ClipVisionConfig) -> candle_core::Result<Self> {
        let tower = if vb.contains_tensor("vision_model.vision_model.embeddings.class_embedding") {
            vb.pp("vision_model.vision_model")
        } else if vb.contains_tensor("vision_model.embeddings.class_embedding") {
            vb.pp("vision_model")
        } else {
            vb.clone()
        };
        let d = config.hidden_size;
        let embeddings = tower.pp("embeddings");
        let patches = (config.image_size / config.patch_size).pow(2);
        let patch_embedding = candle_nn::conv2d_no_bias(
            config.num_channels,
            d,
            config.patch_size,
            candle_nn::Conv2dConfig {
                stride: config.patch_size,
                ..Default::default()
            },
            embeddings.pp("patch_embedding"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = tower.pp(format!("encoder.layers.{i}"));
                EncoderLayer::new(vb, d, config.intermediate_size, config.layer_norm_eps)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding,
            class_embedding: embeddings.get(d, "class_embedding")?,
            position_embedding: candle_nn::embedding(
                patches + 1,
                d,
                embeddings.pp("position_embedding"),
            )?,
            pre_layrnorm: layer_norm(d, config.layer_norm_eps, tower.pp("pre_layrnorm"))?,
            layers,
            post_layernorm: layer_norm(d, config.layer_norm_eps, tower.pp("post_layernorm"))?,
            visual_projection: linear_no_bias(
                d,
                config.projection_dim,
                vb.pp("visual_projection"),
            )?,
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// (pooled output, image embedding) of `pixel_values` [batch, channels, size, size]:
    /// [batch, hidden_size] and [batch, projection_dim].
    pub fn forward(&self, pixel_values: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let batch = pixel_values.dim(0)?;
        let d = self.config.hidden_size;
        let patches = self
            .patch_embedding
            .forward(&pixel_values.to_dtype(self.dtype)?)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((batch, 1, d))?;
        let tokens = Tensor::cat(&[&class, &patches], 1)?;
        let positions = Tensor::arange(0u32, tokens.dim(1)? as u32, tokens.device())?;
        let xs = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mut xs = self.pre_layrnorm.forward(&xs)?;
        for layer in &self.layers {
            xs = layer.forward(
                &xs,
                self.config.num_attention_heads,
                self.config.hidden_act,
                None,
            )?;
        }
        let pooled = self
            .post_layernorm
            .forward(&xs.narrow(1, 0, 1)?.squeeze(1)?)?;
        let embeds = self.visual_projection.forward(&pooled)?;
        Ok((pooled, embeds))
    }

    /// The image embeddings of preprocessed images (each `channels x size x size` float32
    /// values, as [`super::clip_image::ClipImageProcessor`] makes them), one vector each.
    pub fn embed(&self, pixel_values: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("CLIP vision tower", e);
        if pixel_values.is_empty() {
            return Ok(Vec::new());
        }
        let (c, s) = (self.config.num_channels, self.config.image_size);
        let flat: Vec<f32> = pixel_values.iter().flatten().copied().collect();
        if flat.len() != pixel_values.len() * c * s * s {
            return Err(RuntimeError::internal(format!(
                "CLIP vision tower: pixel values are not {c}x{s}x{s} per image"
            )));
        }
        let input =
            Tensor::from_vec(flat, (pixel_values.len(), c, s, s), &self.device).map_err(runtime)?;
        let (_, embeds) = self.forward(&input).map_err(runtime)?;
        embeds
            .to_dtype(DType::F32)
            .and_then(|t| t.to_vec2())
            .map_err(runtime)
    }
}
