//! The 3×3 stride-1 float32 convolution of the AVX2 kernel path as a direct kernel over the
//! padded input: no im2col, and neither operand packed or copied per call.
//!
//! It works on the padded-width grid of [`super::conv`]: output pixel (y, x) is grid position
//! j = y·Wp + x, and kernel tap (dy, dx) reads the padded input at j + dy·Wp + dx. A register
//! tile of [`TILE_ROWS`] output channels × [`TILE_COLUMNS`] grid positions keeps its sums in
//! twelve 8-lane accumulators through every tap of a block of input channels: per (channel,
//! tap), two unaligned loads of the input where it lies and six weights broadcast straight from
//! the layer's own [out, in, 3, 3] tensor (six forward streams, which the prefetcher follows).
//! One `gemm` call per tap instead packs its shifted input into panels on every call, 9–15 % of
//! the AVX2 profile (issue 25), and writes the destination back once per tap.
//!
//! Every output value is summed in one fixed order, whichever thread computes it: channel
//! blocks in turn, and within a block channel after channel, tap after tap, one fused
//! multiply-add each. So the bits depend on the kernel path alone, not on the thread count, the
//! batch or the machine.

use std::arch::x86_64::{
    __m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
    _mm256_storeu_ps,
};

/// Output channels per register tile (6 × 2 accumulators, 2 input vectors and a broadcast
/// fill 15 of AVX2's 16 registers).
const TILE_ROWS: usize = 6;

/// Grid positions per register tile: two 8-lane vectors.
pub const TILE_COLUMNS: usize = 16;

/// Grid positions per work item: a block of input channels over this many positions (and the
/// two rows of padded width below them) stays in a core's L2 cache while every tile of output
/// channels passes over it.
const CHUNK_COLUMNS: usize = 256;

/// Most input channels summed in registers before a tile is stored: the tile's weights for a
/// block (6 × 56 × 9 values, 12 KiB) stay in the L1 cache across the chunk's tiles.
const CHANNEL_BLOCK: usize = 56;

/// Values the padded input must hold after its last channel's plane: the last tile of a row
/// of the grid reads up to `TILE_COLUMNS` positions past the grid's end.
pub const INPUT_SLACK: usize = TILE_COLUMNS + 2;

/// The shape of one image's convolution on the padded-width grid.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Padded height × padded width: the distance between two input channels.
    pub plane: usize,
    /// Padded width: the distance between two rows.
    pub padded_width: usize,
    /// Grid positions that hold output pixels or the crop's padding columns: out_h · Wp.
    pub positions: usize,
}

impl Grid {
    /// The product's row stride: the positions rounded up to whole tiles.
    pub fn row_stride(&self) -> usize {
        self.positions.next_multiple_of(TILE_COLUMNS)
    }

    /// The length the padded input must have.
    fn input_len(&self) -> usize {
        self.channels * self.plane + INPUT_SLACK
    }
}

/// `product[o·S + j] = Σ_c Σ_(dy,dx) weight[o, c, dy, dx] · padded[c·plane + j + dy·Wp + dx]`
/// for every output channel o and grid position j < S, S = [`Grid::row_stride`] (positions
/// past `grid.positions` hold values the crop drops). `weight` is the layer's [out, in, 3, 3]
/// tensor, `padded` the zero-padded input channel after channel with [`INPUT_SLACK`] more
/// values. Runs on `threads` threads (1: on the caller's).
///
/// # Panics
/// If the CPU has no AVX2 and FMA (the AVX2 kernel path was activated, so it has), or a slice
/// is shorter than the grid needs.
pub fn convolve_3x3(
    grid: &Grid,
    weight: &[f32],
    padded: &[f32],
    product: &mut [f32],
    threads: usize,
) {
    assert!(
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        "the direct convolution needs AVX2 and FMA"
    );
    let stride = grid.row_stride();
    assert!(weight.len() >= grid.out_channels * grid.channels * 9);
    assert!(padded.len() >= grid.input_len());
    assert!(product.len() >= grid.out_channels * stride);
    assert!(grid.positions + 2 * grid.padded_width <= grid.plane);
    if grid.channels == 0 {
        product.fill(0.0);
        return;
    }
    let chunks = stride.div_ceil(CHUNK_COLUMNS);
    let row_tiles = grid.out_channels.div_ceil(TILE_ROWS);
    // Enough work items for the threads to share out evenly: more row groups where a small
    // map has few chunks. The split decides who computes a value, never how.
    let groups = if threads > 1 {
        (4 * threads).div_ceil(chunks).clamp(1, row_tiles)
    } else {
        1
    };
    let tiles_per_group = row_tiles.div_ceil(groups);
    let items = chunks * row_tiles.div_ceil(tiles_per_group);
    let destination = Destination(product.as_mut_ptr());
    let item = |index: usize| {
        let (chunk, group) = (index % chunks, index / chunks);
        let columns = chunk * CHUNK_COLUMNS..((chunk + 1) * CHUNK_COLUMNS).min(stride);
        let tiles = group * tiles_per_group..((group + 1) * tiles_per_group).min(row_tiles);
        // SAFETY: the CPU has AVX2 and FMA (asserted); the lengths were checked above; items
        // write disjoint (row tile, column) ranges of the product.
        unsafe { convolve_item(grid, weight, padded, &destination, columns, tiles) };
    };
    if threads > 1 && items > 1 {
        use rayon::prelude::*;
        (0..items).into_par_iter().for_each(item);
    } else {
        (0..items).for_each(item);
    }
}

/// The product's pointer, shared by work items that write disjoint parts of it.
struct Destination(*mut f32);

// SAFETY: each work item writes its own (row tile, column) range; nothing reads another's.
unsafe impl Sync for Destination {}

/// One work item: grid positions `columns` (whole tiles) of the output channels in row tiles
/// `tiles`, every channel block in turn.
///
/// # Safety
/// AVX2 and FMA; the slice lengths of [`convolve_3x3`]'s checks; no other item writes this
/// item's part of the destination.
unsafe fn convolve_item(
    grid: &Grid,
    weight: &[f32],
    padded: &[f32],
    destination: &Destination,
    columns: std::ops::Range<usize>,
    tiles: std::ops::Range<usize>,
) {
    let stride = grid.row_stride();
    let weight_row = grid.channels * 9;
    let blocks = grid.channels.div_ceil(CHANNEL_BLOCK).max(1);
    let block_len = grid.channels.div_ceil(blocks);
    for first_channel in (0..grid.channels).step_by(block_len.max(1)) {
        let channels = block_len.min(grid.channels - first_channel);
        let accumulate = first_channel > 0;
        for tile in tiles.clone() {
            let first_row = tile * TILE_ROWS;
            let rows = TILE_ROWS.min(grid.out_channels - first_row);
            for column in columns.clone().step_by(TILE_COLUMNS) {
                let args = TileArgs {
                    weight: weight
                        .as_ptr()
                        .add(first_row * weight_row + first_channel * 9),
                    weight_row,
                    input: padded.as_ptr().add(first_channel * grid.plane + column),
                    plane: grid.plane,
                    padded_width: grid.padded_width,
                    channels,
                    dst: destination.0.add(first_row * stride + column),
                    dst_row: stride,
                    accumulate,
                };
                match rows {
                    6 => tile_3x3::<6>(&args),
                    5 => tile_3x3::<5>(&args),
                    4 => tile_3x3::<4>(&args),
                    3 => tile_3x3::<3>(&args),
                    2 => tile_3x3::<2>(&args),
                    _ => tile_3x3::<1>(&args),
                }
            }
        }
    }
}

/// Where one register tile reads and writes.
struct TileArgs {
    /// Weight (first row, first channel of the block, tap 0).
    weight: *const f32,
    /// Distance between two output channels' weights: in_channels · 9.
    weight_row: usize,
    /// Padded input at (first channel of the block, the tile's first grid position).
    input: *const f32,
    plane: usize,
    padded_width: usize,
    /// Input channels in the block.
    channels: usize,
    /// Product at (first row, the tile's first grid position).
    dst: *mut f32,
    dst_row: usize,
    /// Add to what the destination holds (every block but the first) instead of replacing it.
    accumulate: bool,
}

/// `R` output channels × 16 grid positions, summed over the block's channels and 9 taps.
///
/// # Safety
/// AVX2 and FMA; every address the arguments reach is inside its allocation.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_3x3<const R: usize>(args: &TileArgs) {
    let mut sums: [[__m256; 2]; R] = [[_mm256_setzero_ps(); 2]; R];
    if args.accumulate {
        for (r, sum) in sums.iter_mut().enumerate() {
            let dst = args.dst.add(r * args.dst_row);
            *sum = [_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8))];
        }
    }
    let wp = args.padded_width;
    for channel in 0..args.channels {
        let input = args.input.add(channel * args.plane);
        let weight = args.weight.add(channel * 9);
        for tap in 0..9 {
            let at = input.add((tap / 3) * wp + tap % 3);
            let (low, high) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
            for (r, sum) in sums.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*weight.add(r * args.weight_row + tap));
                sum[0] = _mm256_fmadd_ps(w, low, sum[0]);
                sum[1] = _mm256_fmadd_ps(w, high, sum[1]);
            }
        }
    }
    for (r, sum) in sums.iter().enumerate() {
        let dst = args.dst.add(r * args.dst_row);
        _mm256_storeu_ps(dst, sum[0]);
        _mm256_storeu_ps(dst.add(8), sum[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::model::gemm::tests::values;

    /// A 3×3, padding-1 convolution of `input` [c, h, w] through the direct kernel: the
    /// cropped output [o, h, w].
    fn direct(
        input: &[f32],
        weight: &[f32],
        (c, o, h, w): (usize, usize, usize, usize),
        threads: usize,
    ) -> Vec<f32> {
        let (hp, wp) = (h + 2, w + 2);
        let grid = Grid {
            channels: c,
            out_channels: o,
            plane: hp * wp,
            padded_width: wp,
            positions: h * wp,
        };
        let mut padded = vec![0f32; grid.input_len()];
        for ch in 0..c {
            for y in 0..h {
                let dst = ch * grid.plane + (y + 1) * wp + 1;
                padded[dst..dst + w].copy_from_slice(&input[(ch * h + y) * w..][..w]);
            }
        }
        let stride = grid.row_stride();
        let mut product = vec![f32::NAN; o * stride];
        convolve_3x3(&grid, weight, &padded, &mut product, threads);
        let mut out = Vec::with_capacity(o * h * w);
        for oc in 0..o {
            for y in 0..h {
                out.extend_from_slice(&product[oc * stride + y * wp..][..w]);
            }
        }
        out
    }

    fn reference(
        input: &[f32],
        weight: &[f32],
        (c, o, h, w): (usize, usize, usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![0f64; o * h * w];
        for oc in 0..o {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0f64;
                    for ch in 0..c {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (iy, ix) = (y + dy, x + dx);
                                if iy < 1 || ix < 1 || iy > h || ix > w {
                                    continue;
                                }
                                sum += weight[((oc * c + ch) * 3 + dy) * 3 + dx] as f64
                                    * input[(ch * h + iy - 1) * w + ix - 1] as f64;
                            }
                        }
                    }
                    out[(oc * h + y) * w + x] = sum;
                }
            }
        }
        out
    }

    fn has_avx2() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[test]
    fn the_direct_kernel_computes_the_convolution() {
        if !has_avx2() {
            return;
        }
        // One and several channel blocks, every remainder of output rows, maps narrower than a
        // tile, a map several chunks long.
        for (c, o, h, w) in [
            (1, 1, 1, 1),
            (4, 7, 5, 3),
            (57, 11, 4, 4),
            (130, 6, 8, 8),
            (3, 13, 40, 37),
            (20, 8, 2, 70),
        ] {
            let input = values(c * h * w, 1);
            let weight = values(o * c * 9, 2);
            let got = direct(&input, &weight, (c, o, h, w), 1);
            let expected = reference(&input, &weight, (c, o, h, w));
            let tolerance = 1e-5 * (9.0 * c as f64).sqrt();
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (*g as f64 - e).abs() <= tolerance,
                    "{c}->{o} ch, {h}x{w}, value {i}: {g} against {e}"
                );
            }
        }
    }

    #[test]
    fn the_thread_count_changes_no_bit() {
        if !has_avx2() {
            return;
        }
        for (c, o, h, w) in [(70, 20, 9, 9), (8, 13, 33, 30)] {
            let input = values(c * h * w, 3);
            let weight = values(o * c * 9, 4);
            let one = direct(&input, &weight, (c, o, h, w), 1);
            for threads in [2, 3, 8] {
                let many = direct(&input, &weight, (c, o, h, w), threads);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&one), bits(&many), "{threads} threads");
            }
        }
    }
}
