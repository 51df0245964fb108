//! The blocks diffusers builds its UNet and VAE from, with diffusers' weight names:
//! `ResnetBlock2D`, `Transformer2DModel` (with `BasicTransformerBlock` and GEGLU feed-forward),
//! the VAE's single-head spatial attention, and the resampling convolutions.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention_hook::{AttentionHook, AttentionKind, AttentionSite, LevelHook};
use super::layers::{
    attention, conv2d, group_norm, layer_norm, linear, linear_no_bias, pointwise_linear, silu,
    upsample_nearest, Conv2d, GroupNorm, LayerNorm, Linear,
};

/// `ResnetBlock2D` with the default ("group norm, add time embedding") variant.
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// `temb_channels` is `None` in the VAE, which has no time embedding.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels != out_channels {
            Some(conv2d(
                in_channels,
                out_channels,
                1,
                1,
                0,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(groups, in_channels, eps, vb.pp("norm1"))?,
            conv1: conv2d(in_channels, out_channels, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: temb_channels
                .map(|t| linear(t, out_channels, vb.pp("time_emb_proj")))
                .transpose()?,
            norm2: group_norm(groups, out_channels, eps, vb.pp("norm2"))?,
            conv2: conv2d(out_channels, out_channels, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
        })
    }

    /// `temb`: [batch, temb_channels] after the UNet's time MLP (SiLU is applied here).
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(xs)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&silu(temb)?)?.unsqueeze(2)?.unsqueeze(3)?;
            h = h.broadcast_add(&t)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.conv_shortcut {
            Some(shortcut) => shortcut.forward(xs)? + h,
            None => xs + h,
        }
    }
}

/// Multi-head attention of a transformer block (`attn1` self, `attn2` cross).
struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
        })
    }

    /// The layer's output; a `hook` at `site` may replace its attention.
    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hook: Option<(&dyn AttentionHook, AttentionSite)>,
    ) -> Result<Tensor> {
        let q = self.to_q.forward(xs)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let controlled = match hook {
            Some((hook, site)) => hook.attend(&site, &q, &k, &v, self.heads)?,
            None => None,
        };
        let out = match controlled {
            Some(out) => out,
            None => attention(&q, &k, &v, self.heads, None)?,
        };
        self.to_out.forward(&out)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each behind a
/// layer norm and a residual connection.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(
        vb: VarBuilder,
        dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let ff_inner = 4 * dim;
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_proj: linear(dim, 2 * ff_inner, vb.pp("ff.net.0.proj"))?,
            ff_out: linear(ff_inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    /// `hook` with the feature map's (height, width), when attention is controlled.
    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hook: Option<(LevelHook<'_>, usize, usize)>,
    ) -> Result<Tensor> {
        let site = |kind| hook.map(|(level, h, w)| (level.hook, level.site(kind, h, w)));
        let h = self.norm1.forward(xs)?;
        let xs = (self
            .attn1
            .forward(&h, &h, site(AttentionKind::SelfAttention))?
            + xs)?;
        let xs = (self.attn2.forward(
            &self.norm2.forward(&xs)?,
            context,
            site(AttentionKind::Cross),
        )? + xs)?;
        // GEGLU with the exact (erf) GELU, as diffusers computes it.
        let projected = self.ff_proj.forward(&self.norm3.forward(&xs)?)?;
        let gated = if projected.device().is_cpu() && projected.dtype() == DType::F32 {
            projected
                .contiguous()?
                .apply_op1_no_bwd(&super::vector_math::GegluOp)?
        } else {
            let half = projected.dim(candle_core::D::Minus1)? / 2;
            let hidden = projected.narrow(candle_core::D::Minus1, 0, half)?;
            let gate = projected.narrow(candle_core::D::Minus1, half, half)?;
            (hidden * gate.gelu_erf()?)?
        };
        self.ff_out.forward(&gated)? + xs
    }
}

/// The input/output projection of a `Transformer2DModel`: a 1×1 convolution, or a linear
/// layer when `use_linear_projection` (SD 2.x).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// `Transformer2DModel` over a feature map, conditioned on text embeddings.
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

/// Shape parameters of a [`SpatialTransformer`].
#[derive(Debug, Clone, Copy)]
pub struct SpatialTransformerShape {
    /// Feature-map channels.
    pub channels: usize,
    /// Attention heads (head width = channels / heads).
    pub heads: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Text embedding width.
    pub context_dim: usize,
    /// Group-norm groups.
    pub groups: usize,
    /// Linear instead of 1×1-convolution projections.
    pub linear_projection: bool,
}

impl SpatialTransformer {
    /// Loads a transformer at `vb`.
    pub fn new(vb: VarBuilder, shape: SpatialTransformerShape) -> Result<Self> {
        let c = shape.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if shape.linear_projection {
                Projection::Linear(linear(c, c, vb.pp(name))?)
            } else {
                Projection::Conv(conv2d(c, c, 1, 1, 0, vb.pp(name))?)
            })
        };
        let head_dim = c / shape.heads;
        let blocks = (0..shape.depth)
            .map(|i| {
                TransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    c,
                    shape.context_dim,
                    shape.heads,
                    head_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: group_norm(shape.groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// `xs`: [batch, channels, h, w]; `context`: [batch, tokens, context_dim]; `hook`: the
    /// attention controller and this transformer's level, when attention is controlled.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hook: Option<LevelHook<'_>>,
    ) -> Result<Tensor> {
        let (batch, channels, height, width) = xs.dims4()?;
        let to_tokens = |t: Tensor| -> Result<Tensor> {
            t.permute((0, 2, 3, 1))?
                .reshape((batch, height * width, channels))
        };
        let to_map = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, height, width, channels))?
                .permute((0, 3, 1, 2))?
                .contiguous()
        };
        let h = self.norm.forward(xs)?;
        let mut h = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&h)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(h)?)?,
        };
        for block in &self.blocks {
            h = block.forward(&h, context, hook.map(|level| (level, height, width)))?;
        }
        let h = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(h)?)?,
            Projection::Linear(lin) => to_map(lin.forward(&h)?)?,
        };
        h + xs
    }
}

/// The VAE mid-block's single-head self-attention over pixels (diffusers `Attention` with group
/// norm and a residual connection). Accepts the current key names (`to_q`, …, `to_out.0`) and
/// the legacy ones (`query`, `key`, `value`, `proj_attn`) that older checkpoints use.
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl SpatialSelfAttention {
    /// Loads the block at `vb`.
    pub fn new(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        let (q, k, v, out) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            to_q: pointwise_linear(channels, channels, vb.pp(q))?,
            to_k: pointwise_linear(channels, channels, vb.pp(k))?,
            to_v: pointwise_linear(channels, channels, vb.pp(v))?,
            to_out: pointwise_linear(channels, channels, vb.pp(out))?,
        })
    }

    /// `xs`: [batch, channels, h, w]; every image attends only to its own pixels.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = xs.dims4()?;
        let h = self
            .group_norm
            .forward(xs)?
            .reshape((batch, channels, height * width))?
            .transpose(1, 2)?
            .contiguous()?;
        let out = attention(
            &self.to_q.forward(&h)?,
            &self.to_k.forward(&h)?,
            &self.to_v.forward(&h)?,
            1,
            None,
        )?;
        let out = self
            .to_out
            .forward(&out)?
            .transpose(1, 2)?
            .reshape((batch, channels, height, width))?;
        out + xs
    }
}

/// `Downsample2D` with a convolution: 3×3, stride 2.
pub struct Downsample {
    conv: Conv2d,
    padding: usize,
}

impl Downsample {
    /// Loads `downsamplers.0` at `vb`.
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?,
            padding,
        })
    }

    /// Halves the spatial size (diffusers pads right and bottom by one when padding is 0).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            let xs = xs.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&xs)
        } else {
            self.conv.forward(xs)
        }
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour ×2 (or to a given size), then 3×3.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// Loads `upsamplers.0` at `vb`.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }

    /// Upsamples to `size` (height, width), or doubles when `None`.
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (height, width) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&upsample_nearest(xs, height, width)?)
    }
}
