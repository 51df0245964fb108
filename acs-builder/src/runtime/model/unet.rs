//! diffusers' `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it: sinusoidal time
//! embedding, cross-attention down / mid / up blocks with skip connections.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention_hook::{AttentionHook, LevelHook};
use super::blocks::{
    Downsample, ResnetBlock, SpatialTransformer, SpatialTransformerShape, Upsample,
};
use super::layers::{conv2d, group_norm, linear, silu, Conv2d, GroupNorm, Linear};

/// One resolution level of the UNet.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLevel {
    /// Channels of the level (`block_out_channels[i]`).
    pub channels: usize,
    /// Whether the level's down and up blocks have cross-attention transformers.
    pub cross_attention: bool,
    /// Attention heads of the level's transformers (diffusers' `attention_head_dim`, which
    /// for SD counts heads).
    pub heads: usize,
    /// Transformer blocks per transformer.
    pub transformer_layers: usize,
}

/// Hyper-parameters read from `unet/config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// The levels, from the highest resolution down.
    pub levels: Vec<UNetLevel>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Group-norm epsilon of the resnets and the output norm.
    pub norm_eps: f64,
    /// Text embedding width.
    pub cross_attention_dim: usize,
    /// Linear projections in and out of the transformers (SD 2.x).
    pub use_linear_projection: bool,
    /// Time embedding: cos before sin.
    pub flip_sin_to_cos: bool,
    /// Time embedding: frequency shift.
    pub freq_shift: f64,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Maps inputs from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
}

impl UNetConfig {
    /// The blend level of attention control: the coarsest level whose down and up blocks have
    /// cross-attention (2, i.e. latent/4, in SD 1.x and 2.x; 1 on the two-level demonstrator);
    /// `None` when no level has any. See [`super::attention_hook::AttentionSite`].
    pub fn blend_level(&self) -> Option<usize> {
        self.levels.iter().rposition(|level| level.cross_attention)
    }

    /// Whether the down and up blocks of `level` have cross-attention.
    pub fn has_cross_attention(&self, level: usize) -> bool {
        self.levels.get(level).is_some_and(|l| l.cross_attention)
    }
}

/// A resnet, followed by a cross-attention transformer on cross-attention levels.
struct Layer {
    resnet: ResnetBlock,
    attention: Option<SpatialTransformer>,
}

struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Downsample>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Upsample>,
}

/// The UNet.
pub struct UNet {
    time_linear_1: Linear,
    time_linear_2: Linear,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid_resnet_1: ResnetBlock,
    mid_attention: SpatialTransformer,
    mid_resnet_2: ResnetBlock,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
}

impl UNet {
    /// Loads the weights at `vb` (diffusers' key names).
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        let parts = Parts {
            config,
            temb: 4 * config.levels[0].channels,
        };
        let c0 = config.levels[0].channels;
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let (mid_resnet_1, mid_attention, mid_resnet_2) = parts.mid_block(vb.pp("mid_block"))?;
        Ok(Self {
            time_linear_1: linear(c0, parts.temb, vb.pp("time_embedding.linear_1"))?,
            time_linear_2: linear(parts.temb, parts.temb, vb.pp("time_embedding.linear_2"))?,
            conv_in: conv2d(config.in_channels, c0, 3, 1, 1, vb.pp("conv_in"))?,
            down: parts.down_blocks(&vb)?,
            mid_resnet_1,
            mid_attention,
            mid_resnet_2,
            up: parts.up_blocks(&vb)?,
            conv_norm_out: group_norm(groups, c0, eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(c0, config.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            config: config.clone(),
        })
    }

    /// Noise (or v) prediction for `sample` [batch, c, h, w] at timestep `t`, conditioned on
    /// `context` [batch, tokens, cross_attention_dim].
    pub fn forward(&self, sample: &Tensor, t: f64, context: &Tensor) -> Result<Tensor> {
        self.forward_controlled(sample, t, context, None)
    }

    /// As [`Self::forward`], with every attention layer asking `hook` first.
    pub fn forward_controlled(
        &self,
        sample: &Tensor,
        t: f64,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
    ) -> Result<Tensor> {
        let blend_level = self.config.blend_level();
        let levels = self.config.levels.len();
        let at_level = |level: usize| {
            hook.map(|hook| LevelHook {
                hook,
                blend_level: blend_level == Some(level),
                coarse: blend_level.is_some_and(|b| level >= b),
                level,
                mid: false,
            })
        };
        let batch = sample.dim(0)?;
        let dtype = sample.dtype();
        let t_emb = timestep_embedding(
            t,
            self.config.levels[0].channels,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
            sample.device(),
        )?
        .to_dtype(dtype)?;
        let emb = self
            .time_linear_2
            .forward(&silu(&self.time_linear_1.forward(&t_emb)?)?)?
            .broadcast_as((batch, 4 * self.config.levels[0].channels))?
            .contiguous()?;
        let sample = if self.config.center_input_sample {
            ((sample * 2.0)? - 1.0)?
        } else {
            sample.clone()
        };

        let run = |layer: &Layer, h: &Tensor, level: usize| -> Result<Tensor> {
            let h = layer.resnet.forward(h, Some(&emb))?;
            match &layer.attention {
                Some(attention) => attention.forward(&h, context, at_level(level)),
                None => Ok(h),
            }
        };

        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.clone()];
        for (level, block) in self.down.iter().enumerate() {
            for layer in &block.layers {
                h = run(layer, &h, level)?;
                skips.push(h.clone());
            }
            if let Some(downsample) = &block.downsample {
                h = downsample.forward(&h)?;
                skips.push(h.clone());
            }
        }

        h = self.mid_resnet_1.forward(&h, Some(&emb))?;
        let mid_hook = hook.map(|hook| LevelHook {
            hook,
            blend_level: false,
            coarse: true,
            level: levels - 1,
            mid: true,
        });
        h = self.mid_attention.forward(&h, context, mid_hook)?;
        h = self.mid_resnet_2.forward(&h, Some(&emb))?;

        for (i, block) in self.up.iter().enumerate() {
            for layer in &block.layers {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet skip connections".into()))?;
                h = run(layer, &Tensor::cat(&[&h, &skip], 1)?, levels - 1 - i)?;
            }
            if let Some(upsample) = &block.upsample {
                // Upsample to the next skip's size, so odd latent sizes work as in diffusers.
                let size = skips.last().map(|s| s.dims4()).transpose()?;
                h = upsample.forward(&h, size.map(|(_, _, sh, sw)| (sh, sw)))?;
            }
        }
        let h = self.conv_norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }
}

/// diffusers' `Timesteps` projection of one timestep, in f32: [1, channels].
fn timestep_embedding(
    t: f64,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = channels / 2;
    let t = t as f32;
    let log_period = -(10_000f64.ln() as f32);
    let denominator = half as f32 - freq_shift as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * (log_period * i as f32 / denominator).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut values: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    values.resize(channels, 0.0); // odd widths are zero-padded
    Tensor::from_vec(values, (1, channels), device)
}

/// Builds the UNet's blocks from its configuration and weights.
struct Parts<'a> {
    config: &'a UNetConfig,
    /// Width of the time embedding.
    temb: usize,
}

impl Parts<'_> {
    fn transformer(&self, vb: VarBuilder, level: &UNetLevel) -> Result<SpatialTransformer> {
        SpatialTransformer::new(
            vb,
            SpatialTransformerShape {
                channels: level.channels,
                heads: level.heads,
                depth: level.transformer_layers,
                context_dim: self.config.cross_attention_dim,
                groups: self.config.norm_num_groups,
                linear_projection: self.config.use_linear_projection,
            },
        )
    }

    fn resnet(&self, vb: VarBuilder, in_c: usize, out_c: usize) -> Result<ResnetBlock> {
        let (groups, eps) = (self.config.norm_num_groups, self.config.norm_eps);
        ResnetBlock::new(vb, in_c, out_c, Some(self.temb), groups, eps)
    }

    /// Layer `i` of a block: a resnet from `in_c` channels, and cross-attention when the level
    /// has it.
    fn layer(&self, vb: &VarBuilder, i: usize, in_c: usize, level: &UNetLevel) -> Result<Layer> {
        let resnet = self.resnet(vb.pp(format!("resnets.{i}")), in_c, level.channels)?;
        let attention = level
            .cross_attention
            .then(|| self.transformer(vb.pp(format!("attentions.{i}")), level))
            .transpose()?;
        Ok(Layer { resnet, attention })
    }

    fn down_blocks(&self, vb: &VarBuilder) -> Result<Vec<DownBlock>> {
        let levels = &self.config.levels;
        let mut down = Vec::with_capacity(levels.len());
        let mut in_c = levels[0].channels;
        for (i, level) in levels.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let layers = (0..self.config.layers_per_block)
                .map(|j| self.layer(&vb, j, if j == 0 { in_c } else { level.channels }, level))
                .collect::<Result<Vec<_>>>()?;
            let downsample = (i + 1 < levels.len())
                .then(|| {
                    let padding = self.config.downsample_padding;
                    Downsample::new(vb.pp("downsamplers.0"), level.channels, padding)
                })
                .transpose()?;
            down.push(DownBlock { layers, downsample });
            in_c = level.channels;
        }
        Ok(down)
    }

    fn mid_block(&self, mid: VarBuilder) -> Result<(ResnetBlock, SpatialTransformer, ResnetBlock)> {
        let deepest = &self.config.levels[self.config.levels.len() - 1];
        let c = deepest.channels;
        Ok((
            self.resnet(mid.pp("resnets.0"), c, c)?,
            self.transformer(mid.pp("attentions.0"), deepest)?,
            self.resnet(mid.pp("resnets.1"), c, c)?,
        ))
    }

    fn up_blocks(&self, vb: &VarBuilder) -> Result<Vec<UpBlock>> {
        let levels = &self.config.levels;
        let n = levels.len();
        let per_block = self.config.layers_per_block;
        let mut up = Vec::with_capacity(n);
        let mut prev_c = levels[n - 1].channels;
        for (i, level) in levels.iter().rev().enumerate() {
            let vb = vb.pp(format!("up_blocks.{i}"));
            // The skip connections of this block come from the matching down level, and the
            // last one from the level above it (or conv_in).
            let skip_c = levels[(n - 1 - i).saturating_sub(1)].channels;
            let layers = (0..=per_block)
                .map(|j| {
                    let resnet_in = if j == 0 { prev_c } else { level.channels };
                    let skip = if j == per_block {
                        skip_c
                    } else {
                        level.channels
                    };
                    self.layer(&vb, j, resnet_in + skip, level)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = (i + 1 < n)
                .then(|| Upsample::new(vb.pp("upsamplers.0"), level.channels))
                .transpose()?;
            up.push(UpBlock { layers, upsample });
            prev_c = level.channels;
        }
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_embedding_matches_the_formula() {
        let emb: Vec<Vec<f32>> = timestep_embedding(10.0, 8, true, 0.0, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        // frequencies 10000^(-i/4): 1, 0.1, 0.01, 0.001
        let expected_cos = [10f32.cos(), 1f32.cos(), 0.1f32.cos(), 0.01f32.cos()];
        for (got, want) in emb[0][..4].iter().zip(expected_cos) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!((emb[0][4] - 10f32.sin()).abs() < 1e-6);
    }
}
