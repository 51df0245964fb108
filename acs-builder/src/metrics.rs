//! Image and latent alignment metrics of a pair.
//!
//! SSIM follows scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=255)` on the luminance `0.2125 R + 0.7154 G +
//! 0.0721 B` (skimage's `rgb2gray` weights, on the 0..255 scale): a separable Gaussian filter
//! truncated at 3.5 sigma (radius 5) with scipy's `reflect` border mode, and the mean of the SSIM
//! map with 5 pixels cropped at every border.

/// A pixel counts as changed when its largest channel difference exceeds this (of 255).
pub const CHANGED_PIXEL_THRESHOLD: u8 = 25;

const SIGMA: f64 = 1.5;
const TRUNCATE: f64 = 3.5;
const DATA_RANGE: f64 = 255.0;

/// The alignment metrics of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMetrics {
    /// Structural similarity of the two images' luminance.
    pub ssim: f32,
    /// Peak signal-to-noise ratio over RGB in dB (infinite for identical images).
    pub psnr: f32,
    /// Fraction of pixels whose largest channel difference exceeds the threshold.
    pub changed_area: f32,
    /// Cosine similarity of the two final latents.
    pub latent_cosine: f32,
}

/// All metrics for two RGB8 images of `width` x `height` and their latents.
pub fn pair_metrics(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_latent: &[f32],
    safe_latent: &[f32],
) -> PairMetrics {
    PairMetrics {
        ssim: ssim(&luminance(unsafe_rgb), &luminance(safe_rgb), width, height) as f32,
        psnr: psnr(unsafe_rgb, safe_rgb) as f32,
        changed_area: changed_area(unsafe_rgb, safe_rgb) as f32,
        latent_cosine: cosine(unsafe_latent, safe_latent) as f32,
    }
}

/// skimage `rgb2gray` weights applied to RGB8, on the 0..255 scale.
pub fn luminance(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks_exact(3)
        .map(|p| 0.2125 * p[0] as f64 + 0.7154 * p[1] as f64 + 0.0721 * p[2] as f64)
        .collect()
}

fn gaussian_kernel() -> Vec<f64> {
    let radius = (TRUNCATE * SIGMA + 0.5) as i64;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / (SIGMA * SIGMA) * (x * x) as f64).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / sum).collect()
}

/// scipy.ndimage's `reflect` mode: d c b a | a b c d | d c b a.
fn reflect(index: i64, len: usize) -> usize {
    let n = len as i64;
    let period = 2 * n;
    let mut i = index.rem_euclid(period);
    if i >= n {
        i = period - 1 - i;
    }
    i as usize
}

/// Separable Gaussian filter over a row-major `width` x `height` plane (axis 0, then axis 1,
/// as scipy's gaussian_filter does).
fn gaussian_filter(plane: &[f64], width: usize, height: usize, kernel: &[f64]) -> Vec<f64> {
    let radius = (kernel.len() / 2) as i64;
    let mut vertical = vec![0.0; plane.len()];
    for y in 0..height {
        for x in 0..width {
            let mut acc = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                let yy = reflect(y as i64 + k as i64 - radius, height);
                acc += weight * plane[yy * width + x];
            }
            vertical[y * width + x] = acc;
        }
    }
    let mut out = vec![0.0; plane.len()];
    for y in 0..height {
        let row = &vertical[y * width..(y + 1) * width];
        for x in 0..width {
            let mut acc = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                acc += weight * row[reflect(x as i64 + k as i64 - radius, width)];
            }
            out[y * width + x] = acc;
        }
    }
    out
}

/// Mean SSIM of two luminance planes. Images with a side under 11 pixels (smaller than the
/// window) are averaged without the border crop.
pub fn ssim(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
    let kernel = gaussian_kernel();
    let filter = |plane: &[f64]| gaussian_filter(plane, width, height, &kernel);
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let ux = filter(a);
    let uy = filter(b);
    let uxx = filter(&product(a, a));
    let uyy = filter(&product(b, b));
    let uxy = filter(&product(a, b));
    let c1 = (0.01 * DATA_RANGE).powi(2);
    let c2 = (0.03 * DATA_RANGE).powi(2);
    let pad = kernel.len() / 2;
    let crop = if width > 2 * pad && height > 2 * pad {
        pad
    } else {
        0
    };
    let mut sum = 0.0;
    let mut count = 0usize;
    for y in crop..height - crop {
        for x in crop..width - crop {
            let i = y * width + x;
            let vx = uxx[i] - ux[i] * ux[i];
            let vy = uyy[i] - uy[i] * uy[i];
            let vxy = uxy[i] - ux[i] * uy[i];
            let a1 = 2.0 * ux[i] * uy[i] + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux[i] * ux[i] + uy[i] * uy[i] + c1;
            let b2 = vx + vy + c2;
            sum += (a1 * a2) / (b1 * b2);
            count += 1;
        }
    }
    if count == 0 {
        1.0
    } else {
        sum / count as f64
    }
}

/// PSNR in dB over all channels with a 255 peak.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() {
        return f64::INFINITY;
    }
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()
    }
}

/// Fraction of RGB pixels whose largest channel difference exceeds [`CHANGED_PIXEL_THRESHOLD`].
pub fn changed_area(a: &[u8], b: &[u8]) -> f64 {
    let pixels = a.len() / 3;
    if pixels == 0 {
        return 0.0;
    }
    let changed = a
        .chunks_exact(3)
        .zip(b.chunks_exact(3))
        .filter(|(p, q)| {
            p.iter()
                .zip(q.iter())
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap_or(0)
                > CHANGED_PIXEL_THRESHOLD
        })
        .count();
    changed as f64 / pixels as f64
}

/// Cosine similarity; 1 for two zero vectors, 0 when only one is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => dot / (na.sqrt() * nb.sqrt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(width: usize, height: usize, phase: usize) -> Vec<u8> {
        (0..width * height * 3)
            .map(|i| ((i * 37 + phase * 11) % 251) as u8)
            .collect()
    }

    #[test]
    fn identical_images_are_perfectly_aligned() {
        let img = pattern(32, 24, 0);
        let m = pair_metrics(&img, &img, 32, 24, &[1.0, 2.0], &[1.0, 2.0]);
        assert!((m.ssim - 1.0).abs() < 1e-9);
        assert!(m.psnr.is_infinite());
        assert_eq!(m.changed_area, 0.0);
        assert!((m.latent_cosine - 1.0).abs() < 1e-6);
    }

    #[test]
    fn different_images_score_lower() {
        let a = pattern(32, 32, 0);
        let b = pattern(32, 32, 5);
        let m = pair_metrics(&a, &b, 32, 32, &[1.0, 0.0], &[0.0, 1.0]);
        assert!(m.ssim < 0.9);
        assert!(m.psnr.is_finite());
        assert!(m.changed_area > 0.0 && m.changed_area <= 1.0);
        assert!(m.latent_cosine.abs() < 1e-6);
    }

    #[test]
    fn reflect_mode_matches_scipy() {
        // scipy 'reflect' on length 3: ... b a | a b c | c b ...
        let idx: Vec<usize> = (-4..7).map(|i| reflect(i, 3)).collect();
        assert_eq!(idx, vec![2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]);
    }

    #[test]
    fn kernel_has_radius_five_and_unit_sum() {
        let k = gaussian_kernel();
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
