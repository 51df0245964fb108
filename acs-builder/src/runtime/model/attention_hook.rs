//! The seam through which attention control reaches the UNet: every attention layer of a
//! transformer block asks an optional [`AttentionHook`] for its output before it runs its own
//! attention, and tells it where it sits ([`AttentionSite`]). The hook is the controller of
//! `runtime::attention`; the model only knows this trait, and a UNet run without a hook runs
//! exactly as before.
//!
//! Layers are described by resolution level, not by index or token count, so that one setting
//! means the same layers at 512 px (SD 1.x), 768 px (SD 2.x) and on the demonstrator.

use candle_core::{Result, Tensor};

use super::layers::{softmax_last_dim, split_heads};
use super::matmul::matmul;

/// Self-attention (`attn1`) or cross-attention over the text (`attn2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// `attn1`: the feature map attends to itself.
    SelfAttention,
    /// `attn2`: the feature map attends to the prompt's 77 tokens.
    Cross,
}

/// Where an attention layer sits in the UNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionSite {
    /// Which of the transformer block's two attentions.
    pub kind: AttentionKind,
    /// A layer of the down or up block of the **blend level**: the coarsest level whose down
    /// and up blocks have cross-attention (latent/4 in SD 1.x and 2.x, whose deepest level has
    /// none; latent/2 on the two-level demonstrator). Prompt-to-Prompt reads its local-blend
    /// maps there (the five 16 x 16 cross-attention layers at 512 px).
    pub blend_level: bool,
    /// A layer at the blend level or coarser, the mid block included: where Prompt-to-Prompt
    /// injects self-attention (its "at most 16² tokens" at 512 px).
    pub coarse: bool,
    /// The resolution level: 0 at the latent's size, each level down halves it (the down
    /// and up blocks of level k work at latent/2^k; the mid block at the deepest level).
    pub level: usize,
    /// A layer of the mid block.
    pub mid: bool,
    /// The feature map's height (queries = height · width).
    pub height: usize,
    /// The feature map's width.
    pub width: usize,
}

/// What the UNet asks at each attention layer.
pub trait AttentionHook: Sync {
    /// The layer's attention output, [batch, n, heads · d] in q's dtype, for queries `q`
    /// [batch, n, heads · d] and keys / values `k`, `v` [batch, m, heads · d]; `None` runs the
    /// layer's own attention unchanged.
    fn attend(
        &self,
        site: &AttentionSite,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>>;
}

/// A hook and the level of the transformer it is handed to (the UNet knows the levels; the
/// transformer adds each layer's kind and size).
#[derive(Clone, Copy)]
pub struct LevelHook<'a> {
    /// The hook.
    pub hook: &'a dyn AttentionHook,
    /// See [`AttentionSite::blend_level`].
    pub blend_level: bool,
    /// See [`AttentionSite::coarse`].
    pub coarse: bool,
    /// See [`AttentionSite::level`].
    pub level: usize,
    /// See [`AttentionSite::mid`].
    pub mid: bool,
}

impl LevelHook<'_> {
    /// The site of a layer of `kind` over a `height` x `width` feature map at this level.
    pub fn site(&self, kind: AttentionKind, height: usize, width: usize) -> AttentionSite {
        AttentionSite {
            kind,
            blend_level: self.blend_level,
            coarse: self.coarse,
            level: self.level,
            mid: self.mid,
            height,
            width,
        }
    }
}

/// The attention probabilities softmax(q kᵀ / √d), [batch, heads, n, m] in float32, for the
/// layers whose probabilities a hook edits.
pub fn attention_probabilities(q: &Tensor, k: &Tensor, heads: usize) -> Result<Tensor> {
    let head_dim = q.dim(2)? / heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = (split_heads(q, heads)? * scale)?;
    let k_t = split_heads(k, heads)?.t()?.contiguous()?;
    softmax_last_dim(&matmul(&q, &k_t)?)
}

/// The attention output of `probabilities` [batch, heads, n, m] over values `v`
/// [batch, m, heads · d]: [batch, n, heads · d] in v's dtype.
pub fn attend_with(probabilities: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (batch, heads, n, _) = probabilities.dims4()?;
    let inner = v.dim(2)?;
    matmul(probabilities, &split_heads(v, heads)?)?
        .transpose(1, 2)?
        .reshape((batch, n, inner))?
        .to_dtype(v.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn probabilities_then_values_give_the_layer_attention() {
        let device = Device::Cpu;
        let values = |n: usize, salt: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * 0.37 + salt).sin()).collect()
        };
        let q = Tensor::from_vec(values(2 * 6 * 8, 0.1), (2, 6, 8), &device).unwrap();
        let k = Tensor::from_vec(values(2 * 5 * 8, 0.2), (2, 5, 8), &device).unwrap();
        let v = Tensor::from_vec(values(2 * 5 * 8, 0.3), (2, 5, 8), &device).unwrap();
        let probs = attention_probabilities(&q, &k, 2).unwrap();
        assert_eq!(probs.dims(), [2, 2, 6, 5]);
        let sums: Vec<f32> = probs
            .sum(3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
        let ours: Vec<f32> = attend_with(&probs, &v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let theirs: Vec<f32> = super::super::layers::attention(&q, &k, &v, 2, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
