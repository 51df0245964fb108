//! The CLIP text encoder (transformers' `CLIPTextModel`): what Stable Diffusion conditions on is
//! its last hidden state after the final layer norm.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::clip_encoder::EncoderLayer;
use super::layers::{layer_norm, Activation, LayerNorm};

/// Hyper-parameters read from `text_encoder/config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEncoderConfig {
    /// Vocabulary size (49,408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Width of the hidden states (768 for SD 1.x, 1024 for SD 2.x).
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Number of positions (77).
    pub max_position_embeddings: usize,
    /// MLP activation (quick_gelu for SD 1.x, gelu for SD 2.x).
    pub hidden_act: Activation,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
}

/// The CLIP text transformer.
pub struct TextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    config: TextEncoderConfig,
}

impl TextEncoder {
    /// Loads the weights at `vb`: transformers 5 keys (`embeddings.…`) or the hub's SD
    /// checkpoints' `text_model.embeddings.…`.
    pub fn new(vb: VarBuilder, config: &TextEncoderConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let d = config.hidden_size;
        let embeddings = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(config.vocab_size, d, embeddings.pp("token_embedding"))?;
        let position_embedding = candle_nn::embedding(
            config.max_position_embeddings,
            d,
            embeddings.pp("position_embedding"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layers.{i}"));
                EncoderLayer::new(vb, d, config.intermediate_size, config.layer_norm_eps)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm: layer_norm(d, config.layer_norm_eps, vb.pp("final_layer_norm"))?,
            config: config.clone(),
        })
    }

    /// Last hidden states after the final layer norm for token ids [batch, len]:
    /// [batch, len, hidden_size].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let mut xs = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let causal = causal_mask(len, xs.device())?.to_dtype(DType::F32)?;
        for layer in &self.layers {
            xs = layer.forward(
                &xs,
                self.config.num_attention_heads,
                self.config.hidden_act,
                Some(&causal),
            )?;
        }
        self.final_layer_norm.forward(&xs)
    }
}

/// Additive causal mask [len, len]: 0 on and below the diagonal, -inf above.
fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (len, len), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_later_positions() {
        let mask: Vec<Vec<f32>> = causal_mask(3, &Device::Cpu).unwrap().to_vec2().unwrap();
        assert_eq!(mask[0][0], 0.0);
        assert!(mask[0][1].is_infinite() && mask[0][2].is_infinite());
        assert_eq!(mask[2], vec![0.0, 0.0, 0.0]);
    }
}
