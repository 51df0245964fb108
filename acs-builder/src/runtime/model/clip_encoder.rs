//! The transformer layer CLIP's text and vision towers share (transformers' `CLIPEncoderLayer`):
//! pre-norm self-attention and a pre-norm MLP, each added to the residual stream.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{attention, layer_norm, linear, Activation, LayerNorm, Linear};

/// One encoder layer.
pub struct EncoderLayer {
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
    /// A layer of width `d` with an MLP of width `intermediate`, from weights at `vb`
    /// (`self_attn.{q,k,v,out}_proj`, `layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2`).
    pub fn new(vb: VarBuilder, d: usize, intermediate: usize, eps: f64) -> Result<Self> {
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            q_proj: linear(d, d, attn.pp("q_proj"))?,
            k_proj: linear(d, d, attn.pp("k_proj"))?,
            v_proj: linear(d, d, attn.pp("v_proj"))?,
            out_proj: linear(d, d, attn.pp("out_proj"))?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
            fc1: linear(d, intermediate, mlp.pp("fc1"))?,
            fc2: linear(intermediate, d, mlp.pp("fc2"))?,
        })
    }

    /// The layer on `xs` [batch, tokens, d] with `heads` attention heads; `mask` (e.g. the
    /// text tower's causal mask) is added to the attention scores.
    pub fn forward(
        &self,
        xs: &Tensor,
        heads: usize,
        act: Activation,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.layer_norm1.forward(xs)?;
        let h = attention(
            &self.q_proj.forward(&h)?,
            &self.k_proj.forward(&h)?,
            &self.v_proj.forward(&h)?,
            heads,
            mask,
        )?;
        let xs = (xs + self.out_proj.forward(&h)?)?;
        let h = self.layer_norm2.forward(&xs)?;
        let h = self.fc2.forward(&act.forward(&self.fc1.forward(&h)?)?)?;
        xs + h
    }
}
