//! Stride-1 convolution on the CPU in float32 as k² accumulated matrix products over shifted
//! views of the zero-padded input ("shifted GEMM"), with the bias added while cropping.
//!
//! With the padded input flattened per channel, output pixel (y, x) at padded-grid index
//! j = y·Wp + x reads input index j + dy·Wp + dx for kernel tap (dy, dx): every tap is one
//! contiguous, shifted window of the same buffer, so each tap is a plain GEMM
//! [out, in] × [in, out_h·Wp] accumulated into one destination, without an im2col copy.
//! Columns x ≥ out_w of the destination are padding artefacts and are dropped by the crop.
//!
//! On the AVX2 kernel path, 3×3 convolutions take the direct kernel of
//! [`super::direct_conv`] on the same grid instead of nine GEMMs, which pack their shifted
//! input on every call.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use gemm::Parallelism;

#[cfg(target_arch = "x86_64")]
use super::direct_conv::INPUT_SLACK;
use crate::runtime::kernel_path::KernelPath;

/// Values past the padded input that the AVX2 direct kernel reads (none elsewhere).
#[cfg(not(target_arch = "x86_64"))]
const INPUT_SLACK: usize = 0;

/// A stride-1 convolution with `padding`, applied as
/// `input.apply_op3_no_bwd(&weight, &bias, &op)`: input [b, in, h, w], weight [out, in, k, k],
/// bias [out], all contiguous float32 on the CPU.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedGemmConv {
    /// Zero padding on each side.
    pub padding: usize,
}

/// How one convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// One GEMM per kernel tap.
    ShiftedGemm,
    /// [`super::direct_conv`]'s AVX2 kernel (3×3 kernels only).
    Direct3x3,
}

impl Method {
    /// The method of kernel path `path` for a `kernel` × `kernel` convolution: the direct
    /// kernel for 3×3 on the AVX2 path (faster than GEMM there; the AVX-512 path keeps its
    /// GEMMs and so its bits), GEMMs elsewhere (1×1 convolutions are one GEMM already).
    fn for_path(path: KernelPath, kernel: usize) -> Self {
        if cfg!(target_arch = "x86_64") && path == KernelPath::CpuAvx2 && kernel == 3 {
            Self::Direct3x3
        } else {
            Self::ShiftedGemm
        }
    }
}

/// The operands of one image's convolution.
struct Operands<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    path: KernelPath,
    method: Method,
}

impl ShiftedGemmConv {
    /// Convolves one image `input` [in, h, w] into `out` [out, out_h, out_w].
    fn convolve(
        &self,
        ops: &Operands,
        input: &[f32],
        (h, w): (usize, usize),
        scratch: &mut Scratch,
        out: &mut [f32],
        parallelism: Parallelism,
    ) {
        let (path, method) = (ops.path, ops.method);
        let (k, p) = (ops.kernel, self.padding);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (out_h, out_w) = (hp + 1 - k, wp + 1 - k);
        let c = ops.in_channels;
        // Padded input, one channel after another, plus k - 1 zeros so that the last tap's
        // window of the last channel stays inside the buffer.
        let plane = hp * wp;
        scratch.padded.clear();
        scratch.padded.resize(c * plane + k + INPUT_SLACK, 0.0);
        for ch in 0..c {
            for y in 0..h {
                let src = &input[(ch * h + y) * w..][..w];
                let dst = ch * plane + (y + p) * wp + p;
                scratch.padded[dst..dst + w].copy_from_slice(src);
            }
        }
        let n = out_h * wp;
        #[cfg(target_arch = "x86_64")]
        if method == Method::Direct3x3 {
            let grid = super::direct_conv::Grid {
                channels: c,
                out_channels: ops.out_channels,
                plane,
                padded_width: wp,
                positions: n,
            };
            let stride = grid.row_stride();
            scratch.product.clear();
            scratch.product.resize(ops.out_channels * stride, 0.0);
            let threads = match parallelism {
                Parallelism::Rayon(threads) => threads,
                _ => 1,
            };
            super::direct_conv::convolve_3x3(
                &grid,
                ops.weight,
                &scratch.padded,
                &mut scratch.product,
                threads,
            );
            crop(
                ops.bias,
                &scratch.product,
                (stride, wp),
                (out_h, out_w),
                out,
            );
            return;
        }
        scratch.product.clear();
        scratch.product.resize(ops.out_channels * n, 0.0);
        let taps = k * k;
        // A destination larger than the caches is written in column chunks small enough that
        // a chunk stays in the core's cache across the k² accumulating GEMMs, instead of
        // streaming the whole destination through memory once per tap (VAE decode at 512 px:
        // 3 % faster; on smaller maps chunking cost more than it saved).
        let chunks = if ops.out_channels * n > UNCHUNKED_DESTINATION {
            n.div_ceil((DESTINATION_CHUNK / ops.out_channels).max(MIN_CHUNK_COLUMNS))
        } else {
            1
        };
        let chunk = n.div_ceil(chunks.max(1)).max(1);
        for start in (0..n).step_by(chunk) {
            let cols = chunk.min(n - start);
            for tap in 0..taps {
                let offset = (tap / k) * wp + tap % k + start;
                // SAFETY: dst is out_channels × cols at column `start` of the out_channels × n
                // product (row stride n); lhs reads weight[o·c·k² + ch·k² + tap] for
                // o < out_channels, ch < c; rhs reads padded[ch·plane + offset + j] for
                // j < cols, whose largest index c·plane + k - 2 is inside the buffer (above).
                unsafe {
                    super::gemm::gemm_f32(
                        path,
                        ops.out_channels,
                        cols,
                        c,
                        scratch.product.as_mut_ptr().add(start),
                        1,
                        n as isize,
                        tap > 0,
                        ops.weight.as_ptr().add(tap),
                        taps as isize,
                        (c * taps) as isize,
                        scratch.padded.as_ptr().add(offset),
                        1,
                        plane as isize,
                        1.0,
                        1.0,
                        parallelism,
                    );
                }
            }
        }
        crop(ops.bias, &scratch.product, (n, wp), (out_h, out_w), out);
    }
}

/// Writes the output pixels of `product` plus the bias into `out` [out, out_h, out_w]:
/// `product` holds one row of `stride` grid positions per output channel, pixel (y, x) at
/// y·Wp + x, Wp = `padded_width`.
fn crop(
    bias: &[f32],
    product: &[f32],
    (stride, padded_width): (usize, usize),
    (out_h, out_w): (usize, usize),
    out: &mut [f32],
) {
    for (o, &bias) in bias.iter().enumerate() {
        for y in 0..out_h {
            let src = &product[o * stride + y * padded_width..][..out_w];
            let dst = &mut out[(o * out_h + y) * out_w..][..out_w];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s + bias;
            }
        }
    }
}

/// Destination values per column chunk (512 KiB of float32: half of a Zen 4 / recent Intel
/// core's L2 cache).
const DESTINATION_CHUNK: usize = 1 << 17;

/// Largest destination written without column chunks (16 MiB of float32).
const UNCHUNKED_DESTINATION: usize = 1 << 22;

/// Narrowest column chunk: narrower GEMMs spend more on packing the weights than they save.
const MIN_CHUNK_COLUMNS: usize = 256;

#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    product: Vec<f32>,
}

/// GEMMs below this many multiply-adds run on one thread (thread start-up costs more).
fn parallelism(work: usize) -> Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1 && work >= 1 << 20 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, name: &str) -> Result<&'a [f32]> {
    super::cpu_storage::contiguous_f32(storage, layout, "shifted-gemm-conv2d", name)
}

impl CustomOp3 for ShiftedGemmConv {
    fn name(&self) -> &'static str {
        "shifted-gemm-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let input = f32_slice(s1, l1, "input")?;
        let weight = f32_slice(s2, l2, "weight")?;
        let bias = f32_slice(s3, l3, "bias")?;
        let (b, c, h, w) = l1.shape().dims4()?;
        let (out_channels, in_channels, kernel, kernel_w) = l2.shape().dims4()?;
        if c != in_channels || kernel != kernel_w || bias.len() != out_channels {
            candle_core::bail!(
                "shifted-gemm-conv2d: input {:?}, weight {:?}, bias {:?} do not fit",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        if hp < kernel || wp < kernel {
            candle_core::bail!("shifted-gemm-conv2d: input {h}x{w} smaller than the kernel");
        }
        let (out_h, out_w) = (hp + 1 - kernel, wp + 1 - kernel);
        let path = crate::runtime::kernel_path::active();
        let ops = Operands {
            weight,
            bias,
            out_channels,
            in_channels,
            kernel,
            path,
            method: Method::for_path(path, kernel),
        };
        let per_out = out_channels * out_h * out_w;
        let mut out = vec![0f32; b * per_out];
        let per_in = c * h * w;
        let threads = candle_core::utils::get_num_threads();
        if threads > 1 && (b % threads == 0 || b >= 4 * threads) {
            // One image per task, each GEMM on one thread: no hand-offs inside the small
            // GEMMs of small feature maps. The result does not depend on the split (GEMMs
            // divide their output, not their sums), so it is the same at every batch size.
            use rayon::prelude::*;
            out.par_chunks_mut(per_out)
                .zip(input.par_chunks(per_in))
                .for_each_init(Scratch::default, |scratch, (image, input)| {
                    self.convolve(&ops, input, (h, w), scratch, image, Parallelism::None);
                });
        } else {
            let mut scratch = Scratch::default();
            for (image, input) in out.chunks_mut(per_out).zip(input.chunks(per_in)) {
                let parallelism = parallelism(out_channels * out_h * (wp * c));
                self.convolve(&ops, input, (h, w), &mut scratch, image, parallelism);
            }
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, out_channels, out_h, out_w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times one image's convolution for the UNet's and VAE's 3×3 shapes with each method on
    /// each AVX path this CPU runs, best of several calls, on 1 thread and on every thread:
    /// `cargo test --release -p acs-builder --lib bench_conv_shapes -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark, not a test"]
    fn bench_conv_shapes() {
        let threads = candle_core::utils::get_num_threads();
        println!("| shape | path, method | GFLOP/s, 1 thread | GFLOP/s, {threads} threads |");
        println!("|---|---|---:|---:|");
        for (c, o, size) in [
            (320, 320, 64),
            (640, 640, 32),
            (1280, 1280, 16),
            (1280, 1280, 8),
            (640, 640, 4),
            (512, 512, 64),
            (512, 512, 128),
            (256, 256, 256),
            (128, 128, 256),
            (4, 320, 64),
            (320, 4, 64),
        ] {
            let input: Vec<f32> = (0..c * size * size)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let weight: Vec<f32> = (0..o * c * 9).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias = vec![0.5f32; o];
            let mut out = vec![0f32; o * size * size];
            let flops = 2.0 * (o * c * 9 * size * size) as f64;
            let mut methods = vec![];
            for path in crate::runtime::kernel_path::supported_paths() {
                if path != KernelPath::CpuGeneric {
                    methods.push((path, Method::ShiftedGemm));
                }
                if Method::for_path(path, 3) == Method::Direct3x3 {
                    methods.push((path, Method::Direct3x3));
                }
            }
            for (path, method) in methods {
                let ops = Operands {
                    weight: &weight,
                    bias: &bias,
                    out_channels: o,
                    in_channels: c,
                    kernel: 3,
                    path,
                    method,
                };
                let conv = ShiftedGemmConv { padding: 1 };
                let mut scratch = Scratch::default();
                let mut rate = |parallelism: Parallelism| {
                    let calls = (2e10 / flops).clamp(2.0, 50.0) as usize;
                    (0..calls)
                        .map(|_| {
                            let start = std::time::Instant::now();
                            conv.convolve(
                                &ops,
                                &input,
                                (size, size),
                                &mut scratch,
                                &mut out,
                                parallelism,
                            );
                            flops / start.elapsed().as_secs_f64() / 1e9
                        })
                        .fold(0.0, f64::max)
                };
                let one = rate(Parallelism::None);
                let all = rate(Parallelism::Rayon(threads));
                println!(
                    "| {c}->{o} ch, {size}x{size} | {path}, {method:?} | {one:.0} | {all:.0} |"
                );
            }
        }
    }
}
