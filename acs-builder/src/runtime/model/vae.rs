//! The decoder half of diffusers' `AutoencoderKL` (latents -> RGB); acs never encodes images.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{ResnetBlock, SpatialSelfAttention, Upsample};
use super::layers::{conv2d, group_norm, Conv2d, GroupNorm};

/// Hyper-parameters read from `vae/config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels out.
    pub out_channels: usize,
    /// Channels per level, highest resolution first.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Whether a 1×1 `post_quant_conv` precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Latents are divided by this before decoding (0.18215 for SD 1.x / 2.x).
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// Pixels per latent cell along each side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// diffusers' decoder blocks use this epsilon in every group norm.
const EPS: f64 = 1e-6;

struct DecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

/// `post_quant_conv` followed by the `Decoder`.
pub struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_resnet_1: ResnetBlock,
    mid_attention: SpatialSelfAttention,
    mid_resnet_2: ResnetBlock,
    up: Vec<DecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// Loads the decoder weights at `vb` (the VAE file's root).
    pub fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let latent = config.latent_channels;
        let deepest = channels[channels.len() - 1];
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| conv2d(latent, latent, 1, 1, 0, vb.pp("post_quant_conv")))
            .transpose()?;
        let dec = vb.pp("decoder");
        let mid = dec.pp("mid_block");
        let mid_resnet = |i: usize| {
            ResnetBlock::new(
                mid.pp(format!("resnets.{i}")),
                deepest,
                deepest,
                None,
                groups,
                EPS,
            )
        };
        let mut up = Vec::with_capacity(channels.len());
        let mut prev = deepest;
        for (i, &out) in channels.iter().rev().enumerate() {
            let block = dec.pp(format!("up_blocks.{i}"));
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        block.pp(format!("resnets.{j}")),
                        if j == 0 { prev } else { out },
                        out,
                        None,
                        groups,
                        EPS,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = (i + 1 < channels.len())
                .then(|| Upsample::new(block.pp("upsamplers.0"), out))
                .transpose()?;
            up.push(DecoderBlock { resnets, upsample });
            prev = out;
        }
        Ok(Self {
            post_quant_conv,
            conv_in: conv2d(latent, deepest, 3, 1, 1, dec.pp("conv_in"))?,
            mid_resnet_1: mid_resnet(0)?,
            mid_attention: SpatialSelfAttention::new(mid.pp("attentions.0"), deepest, groups, EPS)?,
            mid_resnet_2: mid_resnet(1)?,
            up,
            conv_norm_out: group_norm(groups, channels[0], EPS, dec.pp("conv_norm_out"))?,
            conv_out: conv2d(
                channels[0],
                config.out_channels,
                3,
                1,
                1,
                dec.pp("conv_out"),
            )?,
        })
    }

    /// Decodes scaled latents [batch, latent_channels, h, w] to images in [-1, 1]
    /// (unclamped): [batch, out_channels, h·f, w·f].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut h = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        h = self.conv_in.forward(&h)?;
        h = self.mid_resnet_1.forward(&h, None)?;
        h = self.mid_attention.forward(&h)?;
        h = self.mid_resnet_2.forward(&h, None)?;
        for block in &self.up {
            for resnet in &block.resnets {
                h = resnet.forward(&h, None)?;
            }
            if let Some(upsample) = &block.upsample {
                h = upsample.forward(&h, None)?;
            }
        }
        let h = self.conv_norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }
}
