//! Local blend (Prompt-to-Prompt's LocalBlend; Blended Latent Diffusion's blend): a mask of
//! where the edited words attend, and the safe latent held equal to the unsafe latent outside
//! it after every scheduler step.
//!
//! The mask of a pair, from one cross-attention map per branch at the blend level (latent/4):
//! the attention of the edited words' tokens summed over those tokens and averaged over heads,
//! layers and the steps so far (the controller accumulates it); then, per branch, a 3 x 3 max
//! pool (stride 1, the border padded so that it takes the maximum of the cells inside),
//! nearest upsampling to the latent's size, division by the map's maximum and the threshold
//! (`value > threshold`); the mask is the union of the two branches' masks.

/// A map of `height` x `width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` values.
    pub values: Vec<f32>,
}

impl Map {
    /// A map of the given size; `Err` when `values` does not have `height * width` entries.
    pub fn new(height: usize, width: usize, values: Vec<f32>) -> Result<Self, String> {
        if values.len() != height * width || height == 0 || width == 0 {
            return Err(format!(
                "a {height} x {width} map needs {} values, not {}",
                height * width,
                values.len()
            ));
        }
        Ok(Self {
            height,
            width,
            values,
        })
    }

    /// The maximum of each cell's 3 x 3 neighbourhood (cells outside the map left out).
    pub fn max_pool3(&self) -> Map {
        let (h, w) = (self.height, self.width);
        let mut values = Vec::with_capacity(h * w);
        for y in 0..h {
            for x in 0..w {
                let mut best = f32::NEG_INFINITY;
                for yy in y.saturating_sub(1)..(y + 2).min(h) {
                    for xx in x.saturating_sub(1)..(x + 2).min(w) {
                        best = best.max(self.values[yy * w + xx]);
                    }
                }
                values.push(best);
            }
        }
        Map {
            height: h,
            width: w,
            values,
        }
    }

    /// Nearest-neighbour upsampling to `height` x `width` (source cell ⌊dst · in / out⌋, as
    /// torch's `interpolate(mode="nearest")` for whole-number ratios).
    pub fn nearest(&self, height: usize, width: usize) -> Map {
        let mut values = Vec::with_capacity(height * width);
        for y in 0..height {
            let sy = y * self.height / height;
            for x in 0..width {
                let sx = x * self.width / width;
                values.push(self.values[sy * self.width + sx]);
            }
        }
        Map {
            height,
            width,
            values,
        }
    }

    /// Cells whose value divided by the map's maximum exceeds `threshold` (none when the map
    /// is zero everywhere).
    pub fn above(&self, threshold: f32) -> Vec<bool> {
        let max = self
            .values
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if max.is_nan() || max <= 0.0 {
            return vec![false; self.values.len()];
        }
        self.values.iter().map(|v| v / max > threshold).collect()
    }
}

/// The blend mask at the latent's `height` x `width`: the union of the source and target
/// branches' thresholded maps.
pub fn blend_mask(
    source: &Map,
    target: &Map,
    height: usize,
    width: usize,
    threshold: f32,
) -> Vec<bool> {
    let branch = |map: &Map| map.max_pool3().nearest(height, width).above(threshold);
    branch(source)
        .into_iter()
        .zip(branch(target))
        .map(|(s, t)| s || t)
        .collect()
}

/// Holds the safe latent (`target`, channels x height x width) equal to the unsafe latent
/// (`source`) outside the mask, bit for bit; inside, the safe latent stays as it is. Returns
/// false (and changes nothing) when the sizes do not agree.
pub fn apply_blend(source: &[f32], target: &mut [f32], mask: &[bool]) -> bool {
    if source.len() != target.len() || mask.is_empty() || !target.len().is_multiple_of(mask.len()) {
        return false;
    }
    for (plane_source, plane_target) in source
        .chunks_exact(mask.len())
        .zip(target.chunks_exact_mut(mask.len()))
    {
        for ((s, t), &inside) in plane_source.iter().zip(plane_target.iter_mut()).zip(mask) {
            if !inside {
                *t = *s;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_takes_the_neighbourhood_maximum_within_the_map() {
        let map = Map::new(3, 3, vec![0., 0., 0., 0., 5., 0., 0., 0., 1.]).unwrap();
        assert_eq!(map.max_pool3().values, vec![5.0; 9]);
        let corner = Map::new(3, 4, vec![9., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., -1.]).unwrap();
        let pooled = corner.max_pool3();
        assert_eq!(pooled.values[0..4], [9., 9., 0., 0.]);
        assert_eq!(pooled.values[8..12], [0., 0., 0., 0.]);
        assert!(Map::new(2, 2, vec![1.0]).is_err());
    }

    #[test]
    fn nearest_upsampling_repeats_cells() {
        let map = Map::new(2, 2, vec![1., 2., 3., 4.]).unwrap();
        let up = map.nearest(4, 4);
        assert_eq!(
            up.values,
            vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
    }

    #[test]
    fn the_mask_is_the_union_of_both_branches_above_the_threshold() {
        // 4 x 4 maps at latent/2 of an 8 x 8 latent: the source attends at the top left, the
        // target at the bottom right.
        let mut source = vec![0.0; 16];
        source[0] = 1.0;
        let mut target = vec![0.0; 16];
        target[15] = 2.0;
        target[0] = 0.5; // 0.25 of the target's maximum: under the 0.3 threshold
        let source = Map::new(4, 4, source).unwrap();
        let target = Map::new(4, 4, target).unwrap();
        let mask = blend_mask(&source, &target, 8, 8, 0.3);
        let at = |y: usize, x: usize| mask[y * 8 + x];
        // The source's cell (0, 0), pooled over (0..2, 0..2), upsampled to (0..4, 0..4).
        assert!(at(0, 0) && at(3, 3));
        assert!(!at(0, 4) && !at(4, 0));
        // The target's cell (3, 3), pooled over (2..4, 2..4): latent (4..8, 4..8).
        assert!(at(4, 4) && at(7, 7));
        assert_eq!(mask.iter().filter(|m| **m).count(), 32);
        // A map that is zero everywhere selects nothing.
        let zero = Map::new(4, 4, vec![0.0; 16]).unwrap();
        assert!(blend_mask(&zero, &zero, 8, 8, 0.3).iter().all(|m| !m));
    }

    #[test]
    fn outside_the_mask_the_safe_latent_is_the_unsafe_latent_bit_for_bit() {
        let source: Vec<f32> = (0..8).map(|v| v as f32 * 0.1 + 1e-7).collect();
        let mut target: Vec<f32> = (0..8).map(|v| -(v as f32) * 0.3).collect();
        let before = target.clone();
        let mask = [true, false, false, true];
        assert!(apply_blend(&source, &mut target, &mask));
        for channel in 0..2 {
            for (i, &inside) in mask.iter().enumerate() {
                let k = channel * 4 + i;
                let expected = if inside { before[k] } else { source[k] };
                assert_eq!(target[k].to_bits(), expected.to_bits(), "element {k}");
            }
        }
        assert!(!apply_blend(&source, &mut target, &[true; 3]));
    }
}
