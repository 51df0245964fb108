//! Float32 matrix products on the CPU on the kernel path of [`crate::runtime::kernel_path`],
//! with results that depend on that path only, not on the machine.
//!
//! The `gemm` crate picks its micro-kernels from the CPU's features and offers no way to pick
//! another, so this module runs gemm's own generic driver (`gemm_common`) with the AVX-512,
//! AVX2 + FMA or scalar micro-kernels of `gemm_f32`, as gemm's dispatcher would on a CPU whose
//! best path that is. Two more things make a product's bits a function of the path alone:
//!
//! - gemm splits the depth k into blocks from the L1 cache's size and associativity (each block
//!   is summed in registers, then added to the destination), so two CPUs with the same
//!   instructions but other caches could round differently. Here k is split into blocks of at
//!   most [`DEPTH_BLOCK`] before gemm sees it (what gemm chooses itself on common caches), and
//!   gemm never splits a depth that small.
//! - Threads split rows and columns only, never k, so the thread count changes no bit.

use gemm::Parallelism;
use gemm_common::simd::MixedSimd;

use crate::runtime::kernel_path::KernelPath;

/// The largest depth handed to gemm in one call: gemm sums a depth of at most 512 in one
/// block whatever the caches.
pub const DEPTH_BLOCK: usize = 512;

/// One of gemm's f32 drivers: `gemm_basic` with gemm's argument order, conjugation flags
/// dropped.
type Driver = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    f32,
    Parallelism,
);

/// Instantiates gemm's generic driver for one SIMD level and micro-kernel table, as gemm's
/// own `gemm_def!` does for f32 (`N` lanes per register).
macro_rules! driver {
    ($name:ident, $simd:ty, $kernels:path, $lanes:expr) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut f32,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const f32,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const f32,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: f32,
            beta: f32,
            parallelism: Parallelism,
        ) {
            use $kernels as kernels;
            const N: usize = $lanes;
            let simd = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new()
                .expect("the kernel path was checked against the CPU when it was activated");
            gemm_common::gemm::gemm_basic_generic::<
                _,
                f32,
                N,
                { kernels::MR_DIV_N * N },
                { kernels::NR },
                { kernels::MR_DIV_N },
                { kernels::H_M },
                { kernels::H_N },
            >(
                simd,
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                false,
                false,
                false,
                |a, b, c| a * b + c,
                &kernels::UKR,
                &kernels::H_UKR,
                false,
                parallelism,
            )
        }
    };
}

driver!(
    scalar_driver,
    gemm_common::simd::Scalar,
    gemm_f32::microkernel::scalar::f32,
    1
);
#[cfg(target_arch = "x86_64")]
driver!(
    avx2_driver,
    gemm_common::simd::V3,
    gemm_f32::microkernel::fma::f32,
    8
);
#[cfg(target_arch = "x86_64")]
driver!(
    avx512_driver,
    gemm_common::simd::V4,
    gemm_f32::microkernel::avx512f::f32,
    16
);

fn driver(path: KernelPath) -> Driver {
    match path {
        KernelPath::CpuGeneric => scalar_driver,
        #[cfg(target_arch = "x86_64")]
        KernelPath::CpuAvx2 => avx2_driver,
        #[cfg(target_arch = "x86_64")]
        KernelPath::CpuAvx512 => avx512_driver,
        #[cfg(not(target_arch = "x86_64"))]
        KernelPath::CpuAvx2 | KernelPath::CpuAvx512 => scalar_driver,
    }
}

/// dst := alpha·dst + beta·lhs·rhs (alpha is ignored, dst not read, unless `read_dst`), for
/// an m × k `lhs` and a k × n `rhs`, on kernel path `path` (callers pass
/// [`crate::runtime::kernel_path::active`]). Strides are in elements: element (i, j) of dst is at
/// `dst + i·dst_rs + j·dst_cs`, and so on; gemm's argument order.
///
/// # Safety
/// Every element the strides address must be inside its allocation; dst must not overlap
/// lhs or rhs; the CPU must support `path` (as an activated path does).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32(
    path: KernelPath,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: Parallelism,
) {
    let run = driver(path);
    // gemm::gemm's normalisation before it dispatches: a column-oriented destination is
    // computed as the transposed product, and negative strides are walked forwards.
    let (mut dst, mut lhs, mut rhs) = (dst, lhs, rhs);
    let transpose = dst_cs.abs() < dst_rs.abs();
    let (m, n, mut dst_cs, mut dst_rs, mut lhs_cs, mut lhs_rs, mut rhs_cs, mut rhs_rs) =
        if transpose {
            std::mem::swap(&mut lhs, &mut rhs);
            (n, m, dst_rs, dst_cs, rhs_rs, rhs_cs, lhs_rs, lhs_cs)
        } else {
            (m, n, dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs)
        };
    if dst_rs < 0 && m > 0 {
        dst = dst.wrapping_offset((m - 1) as isize * dst_rs);
        dst_rs = -dst_rs;
        lhs = lhs.wrapping_offset((m - 1) as isize * lhs_rs);
        lhs_rs = -lhs_rs;
    }
    if dst_cs < 0 && n > 0 {
        dst = dst.wrapping_offset((n - 1) as isize * dst_cs);
        dst_cs = -dst_cs;
        rhs = rhs.wrapping_offset((n - 1) as isize * rhs_cs);
        rhs_cs = -rhs_cs;
    }
    if lhs_cs < 0 && k > 0 {
        lhs = lhs.wrapping_offset((k - 1) as isize * lhs_cs);
        lhs_cs = -lhs_cs;
        rhs = rhs.wrapping_offset((k - 1) as isize * rhs_rs);
        rhs_rs = -rhs_rs;
    }
    // Equal depth blocks of at most DEPTH_BLOCK; the first one applies alpha and read_dst,
    // the others add to what the previous ones wrote.
    let blocks = k.div_ceil(DEPTH_BLOCK).max(1);
    let depth = k.div_ceil(blocks);
    let mut start = 0;
    for block in 0..blocks {
        let kb = depth.min(k - start);
        let first = block == 0;
        run(
            m,
            n,
            kb,
            dst,
            dst_cs,
            dst_rs,
            read_dst || !first,
            lhs.wrapping_offset(start as isize * lhs_cs),
            lhs_cs,
            lhs_rs,
            rhs.wrapping_offset(start as isize * rhs_rs),
            rhs_cs,
            rhs_rs,
            if first { alpha } else { 1.0 },
            beta,
            parallelism,
        );
        start += kb;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::kernel_path::supported_paths;

    /// Deterministic values in [-1, 1).
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn product(path: KernelPath, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        // Row-major a (m × k), b (k × n), out (m × n).
        unsafe {
            gemm_f32(
                path,
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                Parallelism::None,
            )
        };
        out
    }

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn every_supported_path_computes_the_product() {
        // Depths below, at and above one block, and shapes that take gemm's small-matrix,
        // vector and blocked routes.
        for (m, n, k) in [
            (1, 1, 7),
            (3, 70, 512),
            (65, 9, 513),
            (80, 96, 1300),
            (1, 40, 2000),
        ] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let expected = naive(m, n, k, &a, &b);
            for path in supported_paths() {
                let got = product(path, m, n, k, &a, &b);
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (*g as f64 - e).abs() <= 1e-4 * (k as f64).sqrt(),
                        "{path} {m}x{n}x{k}: {g} against {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_depth_is_split_the_same_way_on_every_machine() {
        // One product of depth 1300 equals the sum, in order, of three products of depth
        // 434, 434 and 432: the blocks gemm_f32 hands to gemm, whatever the caches.
        let (m, n, k) = (40, 48, 1300);
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        for path in supported_paths() {
            let whole = product(path, m, n, k, &a, &b);
            let mut sum = vec![0f32; m * n];
            let mut start = 0;
            for depth in [434, 434, 432] {
                unsafe {
                    gemm_f32(
                        path,
                        m,
                        n,
                        depth,
                        sum.as_mut_ptr(),
                        1,
                        n as isize,
                        start > 0,
                        a.as_ptr().add(start),
                        1,
                        k as isize,
                        b.as_ptr().add(start * n),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        Parallelism::None,
                    )
                };
                start += depth;
            }
            assert_eq!(whole, sum, "{path}");
        }
    }

    #[test]
    fn the_generic_path_differs_from_the_vector_paths_only_in_rounding() {
        // Where the CPU has more than one path, they are different code (this test would
        // catch a dispatch that ignored the path) that agree within float rounding.
        let paths = supported_paths();
        if paths.len() < 2 {
            return;
        }
        let (m, n, k) = (64, 64, 300);
        let (a, b) = (values(m * k, 5), values(k * n, 6));
        let results: Vec<Vec<f32>> = paths.iter().map(|p| product(*p, m, n, k, &a, &b)).collect();
        for (path, result) in paths.iter().zip(&results).skip(1) {
            assert_ne!(&results[0], result, "{path} gave the generic path's bits");
        }
    }
}
