//! Vectorisable float32 kernels for the CPU: exp (Cephes' polynomial, about 1 ulp), softmax of a
//! row, SiLU and GEGLU. They are written as branch-free loops over slices and compiled three
//! times: for the baseline target, with AVX2 + FMA and with AVX-512F, chosen by the active
//! kernel path ([`crate::runtime::kernel_path`]), so that the compiler turns them into 8- or
//! 16-wide vector code where the CPU has it. Rust neither fuses nor reorders float operations,
//! so all three give the same bits (unit-tested). glibc's scalar `expf` was 10-13 % of the
//! runtime's CPU profile.

#[cfg(target_arch = "x86_64")]
use crate::runtime::kernel_path::{self, KernelPath};

/// exp(x) for x in float32's range; below -87.3 it returns ~1e-38 instead of a denormal.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into a part exact in float32 and the rest (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^n from n + 127 (1..=255 after the clamp), read off the mantissa of 1.5·2^23 + n + 127:
    // a float-to-int cast would saturate, which the compiler does not vectorise.
    const MAGIC: f32 = 12_582_912.0;
    let biased = (n + (127.0 + MAGIC)).to_bits() - MAGIC.to_bits();
    let scale = f32::from_bits(biased << 23);
    y * scale
}

/// Lanes of the partial reductions: float reductions only vectorise when written as
/// independent accumulators (the compiler may not reorder a single running sum).
const LANES: usize = 16;

#[inline(always)]
fn reduce(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a = op(*a, *v);
        }
    }
    let mut result = tail.iter().fold(init, |a, v| op(a, *v));
    for a in acc {
        result = op(result, a);
    }
    result
}

/// Replaces each value v of `row` by exp(v - max(row)) and returns their sum: softmax without
/// the final division, which the caller applies to fewer values (attention divides its output
/// rows, head_dim values, instead of its score rows, key-length values). The exponentials
/// and the sum come from one pass.
#[inline(always)]
fn exp_shifted_generic(row: &mut [f32]) -> f32 {
    // A plain comparison (not f32::max, whose NaN rules do not vectorise as well).
    let max = reduce(row, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut sum = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    acc.iter().fold(sum, |s, a| s + a)
}

#[inline(always)]
fn silu_generic(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v /= 1.0 + exp(-*v);
    }
}

/// erf(x) as a rational function of x (Eigen's float32 approximation, clamped to [-4, 4] where
/// erf is ±1 in float32), branch-free so that it vectorises; within 1e-6 of libm's `erff`.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ((((((-2.726_142_3e-10 * x2 + 2.770_681_4e-8) * x2 - 2.101_024e-6) * x2
        - 5.692_506_4e-5)
        * x2
        - 7.349_906_3e-4)
        * x2
        - 2.954_6e-3)
        * x2
        - 1.609_603_3e-2)
        * x;
    let q = (((-1.456_607_2e-5 * x2 - 2.133_740_6e-4) * x2 - 1.682_827e-3) * x2 - 7.373_329e-3)
        * x2
        - 1.426_473_9e-2;
    p / q
}

/// out[i] = hidden[i] · gelu(gate[i]) with the exact (erf) GELU: diffusers' GEGLU.
#[inline(always)]
fn geglu_generic(hidden: &[f32], gate: &[f32], out: &mut [f32]) {
    for ((o, h), g) in out.iter_mut().zip(hidden).zip(gate) {
        *o = h * (0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn geglu_avx2(hidden: &[f32], gate: &[f32], out: &mut [f32]) {
    geglu_generic(hidden, gate, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn geglu_avx512(hidden: &[f32], gate: &[f32], out: &mut [f32]) {
    geglu_generic(hidden, gate, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(row: &mut [f32]) -> f32 {
    exp_shifted_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_avx512(row: &mut [f32]) -> f32 {
    exp_shifted_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(values: &mut [f32]) {
    silu_generic(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn silu_avx512(values: &mut [f32]) {
    silu_generic(values)
}

/// Replaces each value v of `row` by exp(v - max(row)) and returns their sum (softmax is the
/// row divided by the sum). Results are the same bits with and without AVX: the arithmetic
/// and its order are fixed by the code, only the vector width changes.
pub fn exp_shifted_in_place(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        let path = kernel_path::active();
        if path == KernelPath::CpuAvx512 {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (the path was checked).
            return unsafe { exp_shifted_avx512(row) };
        }
        if path == KernelPath::CpuAvx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path was checked).
            return unsafe { exp_shifted_avx2(row) };
        }
    }
    exp_shifted_generic(row)
}

/// Replaces every value v by v · sigmoid(v).
pub fn silu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let path = kernel_path::active();
        if path == KernelPath::CpuAvx512 {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (the path was checked).
            return unsafe { silu_avx512(values) };
        }
        if path == KernelPath::CpuAvx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path was checked).
            return unsafe { silu_avx2(values) };
        }
    }
    silu_generic(values)
}

/// GEGLU of one row: `out[i] = hidden[i] · gelu_erf(gate[i])` (all three of one length).
pub fn geglu(hidden: &[f32], gate: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let path = kernel_path::active();
        if path == KernelPath::CpuAvx512 {
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (the path was checked).
            return unsafe { geglu_avx512(hidden, gate, out) };
        }
        if path == KernelPath::CpuAvx2 {
            // SAFETY: the CPU supports AVX2 and FMA (the path was checked).
            return unsafe { geglu_avx2(hidden, gate, out) };
        }
    }
    geglu_generic(hidden, gate, out)
}

/// Group norm over [batch, channels, spatial…] with per-channel affine weights, optionally
/// followed by SiLU, as a candle operation (input, weight, bias), float32 on the CPU.
pub struct GroupNormOp {
    /// Channel groups.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Apply SiLU to the result.
    pub silu: bool,
}

impl candle_core::CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use super::cpu_storage::contiguous_f32;
        use candle_core::CpuStorage;
        use rayon::prelude::*;
        const OP: &str = "group-norm-f32";
        let mut out = contiguous_f32(s1, l1, OP, "input")?.to_vec();
        let weight = contiguous_f32(s2, l2, OP, "weight")?;
        let bias = contiguous_f32(s3, l3, OP, "bias")?;
        let dims = l1.shape().dims();
        let channels = dims.get(1).copied().unwrap_or(0);
        let spatial: usize = dims.iter().skip(2).product();
        if channels == 0 || channels % self.groups != 0 || weight.len() != channels {
            candle_core::bail!(
                "group-norm-f32: {channels} channels, {} groups",
                self.groups
            );
        }
        let per_group = channels / self.groups * spatial;
        out.par_chunks_mut(per_group)
            .enumerate()
            .for_each(|(index, group)| {
                let n = group.len() as f32;
                let mean = reduce(group, 0.0, |a, b| a + b) / n;
                for v in group.iter_mut() {
                    *v -= mean;
                }
                let var = sum_of_squares(group) / n;
                let inv_std = 1.0 / (var + self.eps).sqrt();
                let first_channel = (index % self.groups) * (channels / self.groups);
                for (c, plane) in group.chunks_mut(spatial).enumerate() {
                    let scale = inv_std * weight[first_channel + c];
                    let shift = bias[first_channel + c];
                    for v in plane.iter_mut() {
                        *v = *v * scale + shift;
                    }
                    if self.silu {
                        silu_in_place(plane);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension of a float32 CPU tensor, with [`exp_shifted_in_place`]:
/// the same bits on every kernel path (candle's own softmax sums with AVX2 where the CPU has
/// it, whatever the path).
pub struct SoftmaxLastDimOp;

impl candle_core::CustomOp1 for SoftmaxLastDimOp {
    fn name(&self) -> &'static str {
        "softmax-last-dim-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        const OP: &str = "softmax-last-dim-f32";
        let mut out = super::cpu_storage::contiguous_f32(storage, layout, OP, "input")?.to_vec();
        let width = layout.shape().dims().last().copied().unwrap_or(0);
        if width > 0 {
            out.par_chunks_mut(width).for_each(|row| {
                let sum = exp_shifted_in_place(row);
                for v in row.iter_mut() {
                    *v /= sum;
                }
            });
        }
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GEGLU over the last dimension of a float32 CPU tensor [..., 2·inner] (the feed-forward
/// projection of a transformer block): hidden = first half, gate = second half, result
/// [..., inner] = hidden · gelu_erf(gate), one parallel pass instead of candle's two strided
/// views, a single-threaded erf and a single-threaded product.
pub struct GegluOp;

impl candle_core::CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "geglu-f32"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let input = super::cpu_storage::contiguous_f32(storage, layout, "geglu-f32", "input")?;
        let mut dims = layout.shape().dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width == 0 || width % 2 != 0 {
            candle_core::bail!("geglu-f32: last dimension {width} is not even");
        }
        let inner = width / 2;
        let mut out = vec![0f32; input.len() / 2];
        out.par_chunks_mut(inner)
            .zip(input.par_chunks(width))
            .with_min_len((1 << 14) / inner.max(1))
            .for_each(|(out, row)| geglu(&row[..inner], &row[inner..], out));
        if let Some(last) = dims.last_mut() {
            *last = inner;
        }
        Ok((candle_core::CpuStorage::F32(out), dims.into()))
    }
}

fn sum_of_squares(values: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v * v;
        }
    }
    tail.iter().map(|v| v * v).sum::<f32>() + acc.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 0.000_37;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 2.5e-7, "{worst}");
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_and_geglu_are_within_1e6_of_libm() {
        let mut worst = 0f32;
        for i in -60_000..60_000 {
            let x = i as f32 * 1e-4 + 0.000_037;
            worst = worst.max((erf(x) - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert!((erf(30.0) - 1.0).abs() < 1e-6 && (erf(-30.0) + 1.0).abs() < 1e-6);
        let gate = [-6.0f32, -1.0, 0.0, 0.5, 2.0, 9.0];
        let hidden = [1.0f32, 2.0, 3.0, -1.0, 0.5, 1.0];
        let mut out = [0f32; 6];
        geglu(&hidden, &gate, &mut out);
        for ((o, h), g) in out.iter().zip(hidden).zip(gate) {
            let want = h * 0.5 * g * (1.0 + libm_erf(g / std::f32::consts::SQRT_2));
            assert!(
                (o - want).abs() < 2e-6 * want.abs().max(1.0),
                "{o} vs {want}"
            );
        }
    }

    /// libm's erff, through candle.
    fn libm_erf(x: f32) -> f32 {
        candle_core::cpu::erf::erf_f32(x)
    }

    #[test]
    fn every_kernel_gives_the_same_bits_at_every_vector_width() {
        let row: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.37).sin() * 12.0).collect();
        let gate: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.11).cos() * 5.0).collect();
        type Geglu<'a> = &'a dyn Fn(&[f32], &[f32], &mut [f32]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // (exp sum, exp row, silu, geglu) of one width.
        let run = |exp: &dyn Fn(&mut [f32]) -> f32, silu: &dyn Fn(&mut [f32]), geglu: Geglu| {
            let mut exps = row.clone();
            let sum = exp(&mut exps);
            let mut silus = row.clone();
            silu(&mut silus);
            let mut gelus = vec![0f32; row.len()];
            geglu(&row, &gate, &mut gelus);
            (sum.to_bits(), bits(&exps), bits(&silus), bits(&gelus))
        };
        let generic = run(&exp_shifted_generic, &silu_generic, &geglu_generic);
        #[cfg(target_arch = "x86_64")]
        {
            use crate::runtime::kernel_path::KernelPath;
            if KernelPath::CpuAvx2.supported() {
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
                let avx2 = unsafe {
                    run(&|r| exp_shifted_avx2(r), &|v| silu_avx2(v), &|h, g, o| {
                        geglu_avx2(h, g, o)
                    })
                };
                assert!(avx2 == generic, "AVX2 bits differ from the generic ones");
            }
            if KernelPath::CpuAvx512.supported() {
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked above).
                let avx512 = unsafe {
                    run(
                        &|r| exp_shifted_avx512(r),
                        &|v| silu_avx512(v),
                        &|h, g, o| geglu_avx512(h, g, o),
                    )
                };
                assert!(
                    avx512 == generic,
                    "AVX-512 bits differ from the generic ones"
                );
            }
        }
        let dispatched = run(&exp_shifted_in_place, &silu_in_place, &geglu);
        assert!(dispatched == generic);
    }

    #[test]
    fn softmax_and_silu_match_their_definitions() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 9.0).collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let expected: Vec<f32> = row.iter().map(|v| (v - max).exp() / sum).collect();
        let sum = exp_shifted_in_place(&mut row);
        for v in row.iter_mut() {
            *v /= sum;
        }
        for (got, want) in row.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        }
        let mut values = vec![-20.0f32, -1.5, 0.0, 0.25, 3.0, 40.0];
        let expected: Vec<f32> = values.iter().map(|v| v / (1.0 + (-v).exp())).collect();
        silu_in_place(&mut values);
        for (got, want) in values.iter().zip(&expected) {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }
}
