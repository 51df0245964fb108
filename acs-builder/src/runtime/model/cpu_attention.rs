//! Fused scaled dot-product attention for float32 on the CPU: for each (batch·head) and each
//! tile of query rows, one GEMM for the scores, a vectorised exp(s - max) per row, one GEMM
//! for the output, whose rows are then divided by the row sums (head_dim divisions per row
//! instead of key-length ones). The full [n, m] score matrix never exists, so memory stays at
//! one tile per thread and the exponentials run on data that is still in cache.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_storage::contiguous_f32;
use super::vector_math::exp_shifted_in_place;

/// Query rows per tile.
const TILE_ROWS: usize = 64;

/// softmax(q kᵀ) v over [batch·heads, len, head_dim] tensors; q must be pre-scaled.
pub struct FusedAttention;

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, name: &str) -> Result<&'a [f32]> {
    contiguous_f32(storage, layout, "fused attention", name)
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let (q, k, v) = (
            slice(s1, l1, "q")?,
            slice(s2, l2, "k")?,
            slice(s3, l3, "v")?,
        );
        let (bh, n, d) = l1.shape().dims3()?;
        let (bh_k, m, d_k) = l2.shape().dims3()?;
        if bh_k != bh || d_k != d || l3.shape().dims3()? != (bh, m, d) {
            candle_core::bail!(
                "fused attention: shapes {:?} {:?} {:?} do not match",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let path = crate::runtime::kernel_path::active();
        let mut out = vec![0f32; bh * n * d];
        out.par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(head, out_head)| {
                let q = &q[head * n * d..][..n * d];
                let k = &k[head * m * d..][..m * d];
                let v = &v[head * m * d..][..m * d];
                out_head
                    .par_chunks_mut(TILE_ROWS * d)
                    .enumerate()
                    .for_each(|(tile, out_tile)| {
                        let rows = out_tile.len() / d;
                        let q_tile = &q[tile * TILE_ROWS * d..][..rows * d];
                        let mut scores = vec![0f32; rows * m];
                        // SAFETY: scores is rows × m (row stride m); q_tile is rows × d (row
                        // stride d); kᵀ reads k[j·d + i] for i < d, j < m; out_tile is rows × d;
                        // v is m × d. All inside their slices.
                        unsafe {
                            super::gemm::gemm_f32(
                                path,
                                rows,
                                m,
                                d,
                                scores.as_mut_ptr(),
                                1,
                                m as isize,
                                false,
                                q_tile.as_ptr(),
                                1,
                                d as isize,
                                k.as_ptr(),
                                d as isize,
                                1,
                                0.0,
                                1.0,
                                Parallelism::None,
                            );
                        }
                        let mut sums = [0f32; TILE_ROWS];
                        for (row, sum) in scores.chunks_mut(m).zip(sums.iter_mut()) {
                            *sum = exp_shifted_in_place(row);
                        }
                        // SAFETY: as above.
                        unsafe {
                            super::gemm::gemm_f32(
                                path,
                                rows,
                                d,
                                m,
                                out_tile.as_mut_ptr(),
                                1,
                                d as isize,
                                false,
                                scores.as_ptr(),
                                1,
                                m as isize,
                                v.as_ptr(),
                                1,
                                d as isize,
                                0.0,
                                1.0,
                                Parallelism::None,
                            );
                        }
                        for (row, sum) in out_tile.chunks_mut(d).zip(sums) {
                            let inv = 1.0 / sum;
                            for v in row.iter_mut() {
                                *v *= inv;
                            }
                        }
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((bh, n, d))))
    }
}
