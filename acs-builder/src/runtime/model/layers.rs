//! Building blocks shared by the three networks: weight-loading constructors with diffusers'
//! key names, activations named as the config files name them, and scaled dot-product
//! attention that bounds its memory.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

/// Activation functions by their transformers / diffusers config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`.
    Silu,
    /// `quick_gelu`: x · sigmoid(1.702 x) (CLIP ViT-L/14, SD 1.x).
    QuickGelu,
    /// `gelu`: the exact, erf-based GELU (OpenCLIP ViT-H/14, SD 2.x; diffusers' GEGLU).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl Activation {
    /// Parses a config value; `None` for names this runtime does not implement.
    pub fn from_config_name(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Self::Silu,
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            _ => return None,
        })
    }

    /// The names accepted by [`Activation::from_config_name`].
    pub const NAMES: &'static [&'static str] = &[
        "silu",
        "swish",
        "quick_gelu",
        "gelu",
        "gelu_new",
        "gelu_pytorch_tanh",
    ];
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => xs.silu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
        }
    }
}

/// A linear layer whose result for one batch element does not depend on the others, on the
/// CPU on the active kernel path ([`super::matmul`]). A [batch, in] input multiplied as one
/// GEMM gets a kernel that changes with the number of rows (measured: a UNet at batch 16 differed from batch 1 by 3.5e-6 through the time
/// embedding projections), so on the CPU such inputs are multiplied one row at a time; a
/// [batch, n, in] input stacks into batch·n rows and was measured batch-invariant (UNet outputs
/// bit-identical at batch 1 to 16, tiny and sd15-medium topologies), so it stays one GEMM.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// A layer from its weight [out, in] and optional bias [out].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }
}

impl Linear {
    /// xs [.., in] · weightᵀ + bias on the CPU's active kernel path ([`super::matmul`]), the
    /// leading dimensions stacked into the rows of one product.
    fn forward_cpu(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims();
        let (inputs, outputs) = (dims[dims.len() - 1], self.inner.weight().dim(0)?);
        let rows = xs.reshape(((), inputs))?;
        let out = super::matmul::matmul(&rows, &self.inner.weight().t()?)?;
        let out = match self.inner.bias() {
            Some(bias) => out.broadcast_add(bias)?,
            None => out,
        };
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(outputs);
        out.reshape(out_dims)
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !xs.device().is_cpu() {
            return self.inner.forward(xs);
        }
        match xs.dims() {
            [batch, _] if *batch > 1 => {
                let rows = (0..*batch)
                    .map(|i| self.forward_cpu(&xs.narrow(0, i, 1)?))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            }
            _ => self.forward_cpu(xs),
        }
    }
}

/// A linear layer `in -> out` with bias, at `vb` (`weight`, `bias`).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear(in_dim, out_dim, vb)?,
    })
}

/// A linear layer without bias.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear {
        inner: candle_nn::linear_no_bias(in_dim, out_dim, vb)?,
    })
}

/// A 1×1 projection stored either as a linear weight `[out, in]` or as a 1×1 convolution
/// weight `[out, in, 1, 1]` (older VAE checkpoints), always with bias.
pub fn pointwise_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    match linear(in_dim, out_dim, vb.clone()) {
        Ok(layer) => Ok(layer),
        Err(_) => {
            let weight = vb
                .get((out_dim, in_dim, 1, 1), "weight")?
                .reshape((out_dim, in_dim))?;
            Ok(Linear::new(weight, Some(vb.get(out_dim, "bias")?)))
        }
    }
}

/// A square convolution with bias.
///
/// On the CPU, convolutions are matrix products on the active kernel path: stride-1 ones in
/// float32 the shifted-GEMM kernel of [`super::conv`], the others (other dtypes, the strided
/// downsamplers) one GEMM per band of output rows over an im2col matrix built from shifted
/// (and, strided, subsampled) views of the padded input. candle 0.11's own CPU convolution
/// spends most of its time gathering patches element by element, and its GEMM takes the CPU's
/// best kernels whatever the path. GPU devices use candle's.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// candle's layer (weights [out, in, k, k], bias), used for strided convolutions and GPUs.
    inner: candle_nn::Conv2d,
    /// The float32 CPU kernel and the bias it adds (zeros when the layer has none), when the
    /// weights are float32 on the CPU.
    shifted_gemm: Option<(super::conv::ShiftedGemmConv, Tensor)>,
    /// The weights as a matrix [out, in·k·k].
    weight_matrix: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Largest im2col band, in values (2^24 f32 values are 64 MiB).
const MAX_IM2COL: usize = 1 << 24;

impl Conv2d {
    fn from_candle(inner: candle_nn::Conv2d, kernel: usize, config: Conv2dConfig) -> Result<Self> {
        let (out_c, in_c, _, _) = inner.weight().dims4()?;
        let weight_matrix = inner
            .weight()
            .reshape((out_c, in_c * kernel * kernel))?
            .contiguous()?;
        let bias = inner.bias().map(|b| b.reshape((1, out_c, 1))).transpose()?;
        let shifted_gemm = if inner.weight().dtype() == DType::F32
            && inner.weight().device().is_cpu()
            && config.stride == 1
            && config.dilation == 1
            && config.groups == 1
        {
            let bias = match inner.bias() {
                Some(bias) => bias.contiguous()?,
                None => Tensor::zeros(out_c, DType::F32, inner.weight().device())?,
            };
            let op = super::conv::ShiftedGemmConv {
                padding: config.padding,
            };
            Some((op, bias))
        } else {
            None
        };
        Ok(Self {
            inner,
            shifted_gemm,
            weight_matrix,
            bias,
            kernel,
            stride: config.stride,
            padding: config.padding,
        })
    }

    /// The input pixels that kernel tap (dy, dx) meets at `rows` × `width` outputs: [batch,
    /// channels, rows, width], every stride-th value of a window of `padded` (which reaches
    /// at least stride·rows + k - 1 rows and stride·width + k - 1 columns).
    fn tap(
        &self,
        padded: &Tensor,
        (dy, dx): (usize, usize),
        rows: usize,
        width: usize,
    ) -> Result<Tensor> {
        let s = self.stride;
        let window = padded.narrow(2, dy, s * rows)?.narrow(3, dx, s * width)?;
        if s == 1 {
            return Ok(window);
        }
        let (batch, channels, _, _) = window.dims4()?;
        window
            .reshape((batch, channels, rows, s, width, s))?
            .narrow(3, 0, 1)?
            .narrow(5, 0, 1)?
            .reshape((batch, channels, rows, width))
    }

    fn forward_band(&self, padded: &Tensor, rows: usize, width: usize) -> Result<Tensor> {
        let (batch, channels, _, _) = padded.dims4()?;
        let k = self.kernel;
        let columns = if k == 1 {
            self.tap(padded, (0, 0), rows, width)?.contiguous()?
        } else {
            let shifted = (0..k * k)
                .map(|i| self.tap(padded, (i / k, i % k), rows, width))
                .collect::<Result<Vec<_>>>()?;
            // [batch, channels, k·k, rows, width]: the weight matrix's column order.
            Tensor::stack(&shifted, 2)?
        };
        let columns = columns.reshape((batch, channels * k * k, rows * width))?;
        let out = super::matmul::matmul(&self.weight_matrix, &columns)?;
        let out = match &self.bias {
            Some(bias) => out.broadcast_add(bias)?,
            None => out,
        };
        out.reshape((batch, (), rows, width))
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !xs.device().is_cpu() {
            return self.inner.forward(xs);
        }
        if let (Some((op, bias)), DType::F32) = (&self.shifted_gemm, xs.dtype()) {
            let weight = self.inner.weight().contiguous()?;
            return xs.contiguous()?.apply_op3_no_bwd(&weight, bias, op);
        }
        let (batch, channels, height, width) = xs.dims4()?;
        let (k, p, s) = (self.kernel, self.padding, self.stride);
        if height + 2 * p < k || width + 2 * p < k {
            candle_core::bail!("conv2d: input {height}x{width} smaller than the kernel");
        }
        let (out_h, out_w) = ((height + 2 * p - k) / s + 1, (width + 2 * p - k) / s + 1);
        // Zeros past the bottom and right edges that the strided taps' windows reach but no
        // output reads.
        let extra = |len: usize, out: usize| (s * out + k - 1).saturating_sub(len + 2 * p);
        let padded = xs
            .pad_with_zeros(2, p, p + extra(height, out_h))?
            .pad_with_zeros(3, p, p + extra(width, out_w))?;
        let per_row = batch * channels * k * k * out_w;
        let band = (MAX_IM2COL / per_row.max(1)).clamp(1, out_h);
        if band == out_h {
            return self.forward_band(&padded, out_h, out_w);
        }
        let mut bands = Vec::with_capacity(out_h.div_ceil(band));
        for start in (0..out_h).step_by(band) {
            let rows = band.min(out_h - start);
            let input = padded.narrow(2, s * start, s * rows + k - 1)?;
            bands.push(self.forward_band(&input, rows, out_w)?);
        }
        Tensor::cat(&bands, 2)
    }
}

/// A square convolution with bias, at `vb` (`weight` [out, in, k, k], `bias`).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    let inner = candle_nn::conv2d(in_channels, out_channels, kernel, config, vb)?;
    Conv2d::from_candle(inner, kernel, config)
}

/// A group norm with affine weights (optionally followed by SiLU); on the CPU in float32 one
/// fused pass per statistic instead of candle's chain of a dozen tensor operations.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Normalises, then applies SiLU when `silu` is set.
    fn apply(&self, xs: &Tensor, silu_after: bool) -> Result<Tensor> {
        if xs.device().is_cpu() && xs.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            let op = super::vector_math::GroupNormOp {
                groups: self.groups,
                eps: self.eps as f32,
                silu: silu_after,
            };
            return xs
                .contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        let normed = self.inner.forward(xs)?;
        if silu_after {
            silu(&normed)
        } else {
            Ok(normed)
        }
    }

    /// group_norm(xs) followed by SiLU.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.apply(xs, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.apply(xs, false)
    }
}

/// A group norm with affine weights at `vb` (`weight`, `bias`).
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    Ok(GroupNorm {
        inner,
        weight: weight.contiguous()?,
        bias: bias.contiguous()?,
        groups,
        eps,
    })
}

/// Softmax over the last dimension; on the CPU in float32 the same bits on every kernel path
/// ([`super::vector_math::SoftmaxLastDimOp`]).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        return xs
            .contiguous()?
            .apply_op1_no_bwd(&super::vector_math::SoftmaxLastDimOp);
    }
    candle_nn::ops::softmax_last_dim(xs)
}

/// A layer norm with affine weights (candle's), fed contiguous inputs: candle then runs its
/// fused layer-norm kernel, whose sums are plain loops; on other inputs it would sum with
/// AVX2 where the CPU has it, whatever the kernel path.
#[derive(Debug, Clone)]
pub struct LayerNorm(candle_nn::LayerNorm);

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.0.forward(&xs.contiguous()?)
    }
}

/// A layer norm with affine weights.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(dim, eps, vb).map(LayerNorm)
}

/// Largest number of attention scores materialised at once (f32 values); longer queries
/// are processed in row chunks. 2^26 scores are 256 MiB.
const MAX_SCORES: usize = 1 << 26;

/// Multi-head scaled dot-product attention, softmax(q kᵀ / √d + mask) v, computed in f32.
///
/// `q`: [batch, n, heads·d], `k`/`v`: [batch, m, heads·d]; `mask` (optional) broadcasts to
/// [batch, heads, n, m] and is added to the scores. Returns [batch, n, heads·d] in q's dtype.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    attention_within(q, k, v, heads, mask, MAX_SCORES)
}

fn attention_within(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    max_scores: usize,
) -> Result<Tensor> {
    let (batch, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    let head_dim = inner / heads;
    let dtype = q.dtype();
    #[cfg(feature = "flash-attn")]
    if mask.is_none() && q.device().is_cuda() && matches!(dtype, DType::F16 | DType::BF16) {
        let heads_first = |t: &Tensor, len: usize| t.reshape((batch, len, heads, head_dim));
        let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
        let out = candle_flash_attn::flash_attn(
            &heads_first(q, n)?,
            &heads_first(k, m)?,
            &heads_first(v, m)?,
            scale,
            false,
        )?;
        return out.reshape((batch, n, inner));
    }
    let split = |t: &Tensor| split_heads(t, heads);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = (split(q)? * scale)?;
    if mask.is_none() && q.device().is_cpu() {
        let flat = |t: Tensor, len: usize| t.reshape((batch * heads, len, head_dim));
        let out = flat(q, n)?.apply_op3_no_bwd(
            &flat(split(k)?, m)?,
            &flat(split(v)?, m)?,
            &super::cpu_attention::FusedAttention,
        )?;
        return out
            .reshape((batch, heads, n, head_dim))?
            .transpose(1, 2)?
            .reshape((batch, n, inner))?
            .to_dtype(dtype);
    }
    let k_t = split(k)?.t()?.contiguous()?;
    let v = split(v)?;
    let rows_per_chunk = (max_scores / (batch * heads * m).max(1)).clamp(1, n);
    let mut chunks = Vec::with_capacity(n.div_ceil(rows_per_chunk));
    for start in (0..n).step_by(rows_per_chunk) {
        let len = rows_per_chunk.min(n - start);
        let q_chunk = if len == n {
            q.clone()
        } else {
            q.narrow(2, start, len)?
        };
        let mut scores = super::matmul::matmul(&q_chunk, &k_t)?;
        if let Some(mask) = mask {
            let mask = if mask.dim(D::Minus2)? == n && len != n {
                mask.narrow(D::Minus2, start, len)?
            } else {
                mask.clone()
            };
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = softmax_last_dim(&scores)?;
        chunks.push(super::matmul::matmul(&probs, &v)?);
    }
    let out = if chunks.len() == 1 {
        chunks.pop().expect("one chunk")
    } else {
        Tensor::cat(&chunks, 2)?
    };
    out.transpose(1, 2)?
        .reshape((batch, n, inner))?
        .to_dtype(dtype)
}

/// [batch, len, heads · d] -> [batch, heads, len, d], contiguous float32: the layout of the
/// attention products.
pub fn split_heads(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, len, inner) = t.dims3()?;
    t.reshape((batch, len, heads, inner / heads))?
        .transpose(1, 2)?
        .to_dtype(DType::F32)?
        .contiguous()
}

/// SiLU, x · sigmoid(x); on the CPU in float32 with the vectorised kernel.
pub fn silu(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&SiluOp)
    } else {
        xs.silu()
    }
}

struct SiluOp;

impl candle_core::CustomOp1 for SiluOp {
    fn name(&self) -> &'static str {
        "silu-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let mut out =
            super::cpu_storage::contiguous_f32(storage, layout, "silu-f32", "input")?.to_vec();
        out.par_chunks_mut(1 << 14)
            .for_each(super::vector_math::silu_in_place);
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Nearest-neighbour upsampling to an exact size (diffusers' `Upsample2D` interpolation).
pub fn upsample_nearest(xs: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    xs.upsample_nearest2d(height, width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Tensor {
        let (b, n, inner) = q.dims3().unwrap();
        let m = k.dim(1).unwrap();
        let d = inner / heads;
        let split = |t: &Tensor, len| {
            t.reshape((b, len, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let scores =
            (split(q, n).matmul(&split(k, m).t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        probs
            .matmul(&split(v, m))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, inner))
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn ramp(shape: (usize, usize, usize), phase: f32) -> Tensor {
        let count = shape.0 * shape.1 * shape.2;
        let values: Vec<f32> = (0..count)
            .map(|i| ((i as f32) * 0.37 + phase).sin())
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn chunked_attention_equals_the_direct_formula() {
        let q = ramp((2, 37, 8), 0.1);
        let k = ramp((2, 11, 8), 0.7);
        let v = ramp((2, 11, 8), 1.3);
        let expected = naive_attention(&q, &k, &v, 2);
        for budget in [usize::MAX, 2 * 2 * 11 * 5, 1] {
            let got = attention_within(&q, &k, &v, 2, None, budget).unwrap();
            let diff = max_abs_diff(&expected, &got);
            assert!(diff < 1e-6, "budget {budget}: {diff}");
        }
    }

    #[test]
    fn gemm_convolution_equals_candles() {
        let device = Device::Cpu;
        let values = |n: usize, phase: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32) * 0.731 + phase).sin()).collect()
        };
        let (b, c, o, h, w) = (2, 3, 5, 7, 6);
        let x = Tensor::from_vec(values(b * c * h * w, 0.2), (b, c, h, w), &device).unwrap();
        for (kernel, padding) in [(3, 1), (1, 0), (3, 0)] {
            let weight = Tensor::from_vec(
                values(o * c * kernel * kernel, 1.1),
                (o, c, kernel, kernel),
                &device,
            )
            .unwrap();
            let bias = Tensor::from_vec(values(o, 2.3), o, &device).unwrap();
            let config = Conv2dConfig {
                padding,
                ..Default::default()
            };
            let inner = candle_nn::Conv2d::new(weight, Some(bias), config);
            let expected = inner.forward(&x).unwrap();
            let conv = Conv2d::from_candle(inner, kernel, config).unwrap();
            let got = conv.forward(&x).unwrap();
            assert_eq!(got.dims(), expected.dims());
            let diff = max_abs_diff(&got, &expected);
            assert!(diff < 1e-5, "kernel {kernel}: {diff}");
            // Banded: one output row per band.
            let padded = x.pad_with_zeros(2, padding, padding).unwrap();
            let padded = padded.pad_with_zeros(3, padding, padding).unwrap();
            let out_w = w + 2 * padding + 1 - kernel;
            let rows: Vec<Tensor> = (0..expected.dim(2).unwrap())
                .map(|r| {
                    let input = padded.narrow(2, r, kernel).unwrap();
                    conv.forward_band(&input, 1, out_w).unwrap()
                })
                .collect();
            let banded = Tensor::cat(&rows, 2).unwrap();
            let diff = max_abs_diff(&banded, &expected);
            assert!(diff < 1e-5, "banded kernel {kernel}: {diff}");
        }
    }

    #[test]
    fn activations_follow_their_definitions() {
        let x = Tensor::new(&[-2.0f32, -0.5, 0.0, 0.5, 2.0], &Device::Cpu).unwrap();
        let gelu: Vec<f32> = Activation::Gelu.forward(&x).unwrap().to_vec1().unwrap();
        // Exact GELU values x·Φ(x).
        let expected = [-0.04550026, -0.15426877, 0.0, 0.34573123, 1.9544997];
        for (g, e) in gelu.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{g} vs {e}");
        }
        let quick: Vec<f32> = Activation::QuickGelu
            .forward(&x)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((quick[4] - 2.0 / (1.0 + (-3.404f32).exp())).abs() < 1e-6);
        assert_eq!(Activation::from_config_name("gelu"), Some(Activation::Gelu));
        assert_eq!(Activation::from_config_name("relu"), None);
    }
}
