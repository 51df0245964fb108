//! The CLIP text encoder (transformers' `CLIPTextModel`): what Stable Diffusion conditions on is
//! its last hidden state after the final layer norm.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::layers::{attention, layer_norm, linear, Activation, Linear};

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

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &TextEncoderConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            q_proj: linear(d, d, attn.pp("q_proj"))?,
            k_proj: linear(d, d, attn.pp("k_proj"))?,
            v_proj: linear(d, d, attn.pp("v_proj"))?,
            out_proj: linear(d, d, attn.pp("out_proj"))?,
            layer_norm2: layer_norm(d, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: linear(d, cfg.intermediate_size, mlp.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, d, mlp.pp("fc2"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        heads: usize,
        act: Activation,
        causal: &Tensor,
    ) -> Result<Tensor> {
        let h = self.layer_norm1.forward(xs)?;
        let h = attention(
            &self.q_proj.forward(&h)?,
            &self.k_proj.forward(&h)?,
            &self.v_proj.forward(&h)?,
            heads,
            Some(causal),
        )?;
        let xs = (xs + self.out_proj.forward(&h)?)?;
        let h = self.layer_norm2.forward(&xs)?;
        let h = self.fc2.forward(&act.forward(&self.fc1.forward(&h)?)?)?;
        xs + h
    }
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
            .map(|i| EncoderLayer::new(vb.pp(format!("encoder.layers.{i}")), config))
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
                &causal,
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
