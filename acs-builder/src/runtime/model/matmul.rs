//! Matrix products of tensors that run on the active kernel path on the CPU.
//!
//! candle's CPU matmul calls the `gemm` crate, which always takes the best micro-kernels of
//! the CPU; the networks' products go through [`matmul`] instead, which on the CPU runs
//! [`super::gemm::gemm_f32`] (float16 is multiplied in float32 and rounded once) and elsewhere
//! is candle's.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::Parallelism;

/// `a · b` over the last two dimensions, with the leading (batch) dimensions broadcast as
/// candle's `broadcast_matmul` does.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() || !matches!(a.dtype(), DType::F32 | DType::F16) {
        return a.broadcast_matmul(b);
    }
    let (a_rank, b_rank) = (a.rank(), b.rank());
    if a_rank < 2 || b_rank < 2 {
        candle_core::bail!("matmul: operands of rank {a_rank} and {b_rank}, need 2 or more");
    }
    let (a_dims, b_dims) = (a.dims(), b.dims());
    let batch = Shape::from(&a_dims[..a_rank - 2])
        .broadcast_shape_binary_op(&Shape::from(&b_dims[..b_rank - 2]), "matmul")?;
    let expand = |t: &Tensor, rows: usize, cols: usize| -> Result<Tensor> {
        let mut dims = batch.dims().to_vec();
        dims.extend([rows, cols]);
        t.broadcast_as(dims)
    };
    let a32 = a.to_dtype(DType::F32)?;
    let b32 = b.to_dtype(DType::F32)?;
    let a32 = expand(&a32, a_dims[a_rank - 2], a_dims[a_rank - 1])?;
    let b32 = expand(&b32, b_dims[b_rank - 2], b_dims[b_rank - 1])?;
    a32.apply_op2_no_bwd(&b32, &CpuMatmul)?.to_dtype(a.dtype())
}

/// The float32 CPU product of two tensors of one batch shape, any strides.
struct CpuMatmul;

/// Offsets of every batch element of `layout` (all dimensions but the last two), in order.
fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let dims = layout.dims();
    let strides = layout.stride();
    let batch_dims = &dims[..dims.len() - 2];
    let mut offsets = vec![layout.start_offset()];
    for (&dim, &stride) in batch_dims.iter().zip(strides) {
        offsets = offsets
            .iter()
            .flat_map(|&base| (0..dim).map(move |i| base + i * stride))
            .collect();
    }
    offsets
}

impl CustomOp2 for CpuMatmul {
    fn name(&self) -> &'static str {
        "acs-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
            candle_core::bail!("acs-matmul: operands must be f32");
        };
        let (a_dims, b_dims) = (l1.dims(), l2.dims());
        let rank = a_dims.len();
        let (m, k) = (a_dims[rank - 2], a_dims[rank - 1]);
        let (k_b, n) = (b_dims[rank - 2], b_dims[rank - 1]);
        if b_dims.len() != rank || k_b != k || a_dims[..rank - 2] != b_dims[..rank - 2] {
            candle_core::bail!("acs-matmul: shapes {a_dims:?} and {b_dims:?} do not multiply");
        }
        let (a_rs, a_cs) = (l1.stride()[rank - 2], l1.stride()[rank - 1]);
        let (b_rs, b_cs) = (l2.stride()[rank - 2], l2.stride()[rank - 1]);
        let (a_offsets, b_offsets) = (batch_offsets(l1), batch_offsets(l2));
        let mut out = vec![0f32; a_offsets.len() * m * n];
        let path = crate::runtime::kernel_path::active();
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        for ((dst, &a_at), &b_at) in out
            .chunks_mut((m * n).max(1))
            .zip(&a_offsets)
            .zip(&b_offsets)
        {
            if m * n == 0 {
                break;
            }
            // SAFETY: candle's layouts address a[a_at + i·a_rs + l·a_cs] for i < m, l < k and
            // b[b_at + l·b_rs + j·b_cs] for l < k, j < n inside their storages; dst is the
            // m × n row-major block of this batch element.
            unsafe {
                super::gemm::gemm_f32(
                    path,
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr().add(a_at),
                    a_cs as isize,
                    a_rs as isize,
                    b.as_ptr().add(b_at),
                    b_cs as isize,
                    b_rs as isize,
                    0.0,
                    1.0,
                    parallelism,
                );
            }
        }
        let mut shape = a_dims[..rank - 2].to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn products_equal_candles_for_every_layout() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (2, 3, 7, 4), &dev).unwrap();
        // Plain, transposed views, broadcast batch, 2-D right operand.
        let w = Tensor::randn(0f32, 1.0, (4, 7), &dev).unwrap();
        let b_t = b.transpose(2, 3).unwrap().contiguous().unwrap();
        let cases = [
            (a.clone(), b.clone()),
            (a.clone(), b_t.transpose(2, 3).unwrap()),
            (a.clone(), w.t().unwrap()),
            (a.narrow(1, 1, 2).unwrap(), b.narrow(1, 0, 2).unwrap()),
        ];
        for (x, y) in cases {
            let ours = matmul(&x, &y).unwrap();
            // candle multiplies only (nearly) contiguous operands: give it copies.
            let candles = x
                .contiguous()
                .unwrap()
                .broadcast_matmul(&y.contiguous().unwrap())
                .unwrap();
            assert_eq!(ours.dims(), candles.dims());
            assert!(close(&ours, &candles) < 1e-5);
        }
    }

    #[test]
    fn float16_is_multiplied_in_float32() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (6, 9), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (9, 5), &dev).unwrap();
        let half = matmul(
            &a.to_dtype(DType::F16).unwrap(),
            &b.to_dtype(DType::F16).unwrap(),
        )
        .unwrap();
        assert_eq!(half.dtype(), DType::F16);
        let full = a.matmul(&b).unwrap();
        assert!(close(&half.to_dtype(DType::F32).unwrap(), &full) < 0.05);
    }
}
