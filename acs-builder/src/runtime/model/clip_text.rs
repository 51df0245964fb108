//! CLIP's text tower with its projection (transformers' `CLIPTextModelWithProjection`): the text
//! transformer Stable Diffusion also uses, pooled at the end-of-text token and projected into
//! the space the vision tower projects images into. CLIP directional similarity compares the
//! two.
//!
//! It loads a transformers `CLIPModel` folder (`text_model.…`, `text_projection.weight`, a
//! `CLIPConfig` whose `text_config` it reads with transformers' `CLIPTextConfig` defaults) or a
//! `CLIPTextModelWithProjection` folder (a `CLIPTextConfig`).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::clip_vision::load_tower;
use super::config::JsonConfig;
use super::layers::{linear_no_bias, Linear};
use super::text_encoder::{TextEncoder, TextEncoderConfig};
use crate::runtime::error::RuntimeError;

/// The end-of-text id of legacy CLIP configs, which transformers reads as "pool at the largest
/// id" (OpenAI's rule: the end-of-text token has the largest id of the vocabulary).
const LEGACY_EOS_TOKEN_ID: u32 = 2;

/// Hyper-parameters of a text tower with projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// The transformer.
    pub encoder: TextEncoderConfig,
    /// Width of the text embedding (768 for ViT-L/14).
    pub projection_dim: usize,
    /// The token whose hidden state is pooled (2 in legacy configs: the largest id).
    pub eos_token_id: u32,
}

/// Reads a text tower's config: a `CLIPConfig` (its `text_config`, `projection_dim` at the top)
/// or a `CLIPTextConfig`; keys left out take transformers' defaults.
pub fn clip_text_config(cfg: &JsonConfig) -> Result<ClipTextConfig, RuntimeError> {
    let projection_dim = cfg.usize_or("projection_dim", Some(512))?;
    if let Some(text) = cfg.section("text_config") {
        return text_hyperparameters(&text, projection_dim);
    }
    let model_type = cfg.str_or("model_type", "clip_text_model")?;
    if !matches!(model_type, "clip_text_model" | "clip") {
        return Err(cfg.error(
            "model_type",
            format!("`{model_type}` is not a CLIP text model (clip_text_model, clip)"),
        ));
    }
    text_hyperparameters(cfg, projection_dim)
}

fn text_hyperparameters(
    text: &JsonConfig,
    projection_dim: usize,
) -> Result<ClipTextConfig, RuntimeError> {
    let hidden_act = text.activation_or("hidden_act", "quick_gelu")?;
    let hidden_size = text.usize_or("hidden_size", Some(512))?;
    let heads = text.usize_or("num_attention_heads", Some(8))?;
    if heads == 0 || hidden_size % heads != 0 {
        return Err(text.error(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    let max_positions = text.usize_or("max_position_embeddings", Some(77))?;
    if max_positions < crate::runtime::tokenizer::CONTEXT_LENGTH {
        return Err(text.error(
            "max_position_embeddings",
            format!(
                "{max_positions} positions; CLIP's prompts take {}",
                crate::runtime::tokenizer::CONTEXT_LENGTH
            ),
        ));
    }
    let eos = text.usize_or("eos_token_id", Some(49407))?;
    Ok(ClipTextConfig {
        encoder: TextEncoderConfig {
            vocab_size: text.usize_or("vocab_size", Some(49408))?,
            hidden_size,
            intermediate_size: text.usize_or("intermediate_size", Some(2048))?,
            num_hidden_layers: text.usize_or("num_hidden_layers", Some(12))?,
            num_attention_heads: heads,
            max_position_embeddings: max_positions,
            hidden_act,
            layer_norm_eps: text.f64_or("layer_norm_eps", 1e-5)?,
        },
        projection_dim,
        eos_token_id: u32::try_from(eos)
            .map_err(|_| text.error("eos_token_id", format!("{eos} is not a token id")))?,
    })
}

/// The text tower with its projection.
pub struct ClipTextTower {
    encoder: TextEncoder,
    text_projection: Linear,
    config: ClipTextConfig,
    device: Device,
}

impl ClipTextTower {
    /// Loads the tower of the folder `dir` (config.json and safetensors weights) in `dtype`
    /// on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, RuntimeError> {
        let config = clip_text_config(&JsonConfig::read(&dir.join("config.json"))?)?;
        load_tower(dir, dtype, device, "the text tower's ", |vb| {
            Self::new(vb, &config)
        })
    }

    /// The tower from weights at `vb` (`text_model.…` or the transformer's keys at the top,
    /// and `text_projection.weight`).
    pub fn new(vb: VarBuilder, config: &ClipTextConfig) -> candle_core::Result<Self> {
        let encoder = TextEncoder::new(vb.clone(), &config.encoder)?;
        let text_projection = linear_no_bias(
            config.encoder.hidden_size,
            config.projection_dim,
            vb.pp("text_projection"),
        )?;
        Ok(Self {
            encoder,
            text_projection,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Where each prompt is pooled, as transformers pools it: the first end-of-text token, or
    /// in legacy configs (`eos_token_id = 2`) the first largest id.
    fn pooled_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|row| {
                let position = if self.config.eos_token_id == LEGACY_EOS_TOKEN_ID {
                    let top = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&id| id == top)
                } else {
                    row.iter().position(|&id| id == self.config.eos_token_id)
                };
                // transformers' argmax of an all-false row is 0.
                position.unwrap_or(0)
            })
            .collect()
    }

    /// The text embeddings (projected, not normalised) of token id rows of one length (CLIP's
    /// 77-token context), one vector each.
    pub fn embed(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let runtime = |e: candle_core::Error| RuntimeError::candle("CLIP text tower", e);
        let Some(len) = ids.first().map(Vec::len) else {
            return Ok(Vec::new());
        };
        let vocab = self.config.encoder.vocab_size as u32;
        if ids.iter().any(|row| row.len() != len) || ids.iter().flatten().any(|&id| id >= vocab) {
            return Err(RuntimeError::input(format!(
                "CLIP text tower: token ids must be rows of one length below the vocabulary \
                 size {vocab} (is the folder's tokenizer the model's?)"
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (ids.len(), len), &self.device).map_err(runtime)?;
        let hidden = self.encoder.forward(&input).map_err(runtime)?;
        let positions: Vec<u32> = self
            .pooled_positions(ids)
            .into_iter()
            .enumerate()
            .map(|(row, position)| (row * len + position) as u32)
            .collect();
        let index = Tensor::new(positions.as_slice(), &self.device).map_err(runtime)?;
        let width = self.config.encoder.hidden_size;
        let pooled = hidden
            .reshape((ids.len() * len, width))
            .and_then(|h| h.index_select(&index, 0))
            .map_err(runtime)?;
        self.text_projection
            .forward(&pooled)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Result<ClipTextConfig, RuntimeError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, value.to_string()).unwrap();
        clip_text_config(&JsonConfig::read(&path).unwrap())
    }

    #[test]
    fn reads_clip_and_text_configs_with_transformers_defaults() {
        let c = config(json!({
            "model_type": "clip",
            "projection_dim": 768,
            "text_config": {"hidden_size": 32, "num_attention_heads": 2, "eos_token_id": 2}
        }))
        .unwrap();
        assert_eq!(c.projection_dim, 768);
        assert_eq!(c.encoder.hidden_size, 32);
        assert_eq!(c.encoder.vocab_size, 49408);
        assert_eq!(c.encoder.num_hidden_layers, 12);
        assert_eq!(c.eos_token_id, 2);
        let c = config(json!({"model_type": "clip_text_model"})).unwrap();
        assert_eq!((c.projection_dim, c.eos_token_id), (512, 49407));
        let err = config(json!({"model_type": "bert"})).unwrap_err();
        assert!(err.to_string().contains("not a CLIP text model"), "{err}");
        let err = config(json!({"text_config": {"max_position_embeddings": 16}})).unwrap_err();
        assert!(err.to_string().contains("max_position_embeddings"), "{err}");
    }
}
