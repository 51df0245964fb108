//! Image and latent alignment metrics of a pair.
//!
//! SSIM follows scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=255)` on the luminance `0.2125 R + 0.7154 G +
//! 0.0721 B` (skimage's `rgb2gray` weights, on the 0..255 scale): a separable Gaussian filter
//! truncated at 3.5 sigma (radius 5) with scipy's `reflect` border mode, and the mean of the SSIM
//! map with 5 pixels cropped at every border.
//!
//! Because the crop is exactly the filter's radius, no pixel of the cropped map needs a
//! reflected neighbour: images of at least 11 x 11 pixels are filtered one output row at a time
//! without any border handling (the five planes x, y, x², y², xy in one pass, in blocks of
//! columns that the compiler vectorises), and only smaller images take the general path with
//! scipy's borders. Every sum keeps the order of the plain formula (taps in order, the map
//! summed row-major), so the fast path gives bit-identical results; on x86-64 CPUs with AVX2
//! the same code runs four f64 lanes wide instead of two (same operations, same results).
//! One pair is computed on one thread; callers parallelise over pairs.

use crate::judge::change_mask::{ChangeMask, ChangeRule};

/// A pixel counts as changed when its largest channel difference exceeds this (of 255), unless
/// the manifest's `[output].mask_threshold` says otherwise.
pub const CHANGED_PIXEL_THRESHOLD: u8 = crate::judge::change_mask::DEFAULT_THRESHOLD;

const SIGMA: f64 = 1.5;
const TRUNCATE: f64 = 3.5;
const DATA_RANGE: f64 = 255.0;
/// Taps either side of the window centre (5): `int(TRUNCATE * SIGMA + 0.5)`, as scipy
/// computes it.
const RADIUS: usize = (TRUNCATE * SIGMA + 0.5) as usize;
/// Window width (11).
const TAPS: usize = 2 * RADIUS + 1;
/// Columns per block of the vectorised filter loops.
const LANES: usize = 8;

/// Defines `$name`, which runs `$generic` compiled with AVX2 enabled on the `cpu-avx2` and
/// `cpu-avx512` kernel paths (`runtime::kernel_path`). Only the vector width changes: the
/// operations and their order are the same, so the result is bit-identical to the baseline
/// (SSE2) build.
macro_rules! avx2_dispatch {
    ($name:ident = $generic:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                use crate::runtime::kernel_path::{active, KernelPath};
                if active() >= KernelPath::CpuAvx2 {
                    // SAFETY: the CPU supports AVX2 (the active path was checked against it).
                    return unsafe { wide($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// The alignment metrics of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMetrics {
    /// Structural similarity of the two images' luminance.
    pub ssim: f32,
    /// Peak signal-to-noise ratio over RGB in dB (infinite for identical images).
    pub psnr: f32,
    /// Fraction of pixels in the change mask (see [`ChangeRule`]).
    pub changed_area: f32,
    /// Box around the change mask's pixels; `None` when none changed.
    pub changed_box: Option<ChangedBox>,
    /// Cosine similarity of the two final latents.
    pub latent_cosine: f32,
}

/// All metrics for two RGB8 images of `width` x `height` and their latents; the changed area
/// and box follow `rule` (without dilation by a vectorised count, else from the mask).
pub fn pair_metrics(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_latent: &[f32],
    safe_latent: &[f32],
    rule: ChangeRule,
) -> PairMetrics {
    pair_metrics_with_mask(
        unsafe_rgb,
        safe_rgb,
        width,
        height,
        unsafe_latent,
        safe_latent,
        rule,
        None,
    )
}

/// As [`pair_metrics`], with the changed area and box read off `mask` when the caller has
/// already made it (the same values: the mask is the rule applied to the same pixels).
#[allow(clippy::too_many_arguments)]
pub fn pair_metrics_with_mask(
    unsafe_rgb: &[u8],
    safe_rgb: &[u8],
    width: usize,
    height: usize,
    unsafe_latent: &[f32],
    safe_latent: &[f32],
    rule: ChangeRule,
    mask: Option<&ChangeMask>,
) -> PairMetrics {
    let (area, bounds) = match mask {
        Some(mask) => (mask.area(), mask.bounding_box()),
        None if rule.dilation == 0 => (
            changed_area(unsafe_rgb, safe_rgb, rule.threshold),
            changed_box(unsafe_rgb, safe_rgb, width, rule.threshold),
        ),
        None => {
            let mask = ChangeMask::of(unsafe_rgb, safe_rgb, width, height, rule);
            (mask.area(), mask.bounding_box())
        }
    };
    PairMetrics {
        ssim: ssim(&luminance(unsafe_rgb), &luminance(safe_rgb), width, height) as f32,
        psnr: psnr(unsafe_rgb, safe_rgb) as f32,
        changed_area: area as f32,
        changed_box: bounds,
        latent_cosine: cosine(unsafe_latent, safe_latent) as f32,
    }
}

/// skimage `rgb2gray` weights applied to RGB8, on the 0..255 scale (a trailing partial pixel
/// is ignored).
pub fn luminance(rgb: &[u8]) -> Vec<f64> {
    luminance_dispatch(rgb)
}

avx2_dispatch!(luminance_dispatch = luminance_generic(rgb: &[u8]) -> Vec<f64>);

#[inline(always)]
fn luminance_generic(rgb: &[u8]) -> Vec<f64> {
    let pixels = rgb.as_chunks::<3>().0;
    let mut out = vec![0.0; pixels.len()];
    for (value, p) in out.iter_mut().zip(pixels) {
        *value = 0.2125 * p[0] as f64 + 0.7154 * p[1] as f64 + 0.0721 * p[2] as f64;
    }
    out
}

fn gaussian_kernel() -> [f64; TAPS] {
    let mut weights = [0.0; TAPS];
    for (i, weight) in weights.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *weight = (-0.5 / (SIGMA * SIGMA) * (x * x)).exp();
    }
    let sum: f64 = weights.iter().sum();
    weights.map(|w| w / sum)
}

/// SSIM's stabilising constants C1 and C2.
fn stabilisers() -> (f64, f64) {
    ((0.01 * DATA_RANGE).powi(2), (0.03 * DATA_RANGE).powi(2))
}

/// One value of the SSIM map from the filtered means of x, y, x², y² and xy.
#[inline(always)]
fn ssim_at(ux: f64, uy: f64, uxx: f64, uyy: f64, uxy: f64, c1: f64, c2: f64) -> f64 {
    let vx = uxx - ux * ux;
    let vy = uyy - uy * uy;
    let vxy = uxy - ux * uy;
    let a1 = 2.0 * ux * uy + c1;
    let a2 = 2.0 * vxy + c2;
    let b1 = ux * ux + uy * uy + c1;
    let b2 = vx + vy + c2;
    (a1 * a2) / (b1 * b2)
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
/// as scipy's gaussian_filter does), with `reflect` borders. Used for images smaller than the
/// window only.
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

/// Mean SSIM of two luminance planes of `width` x `height` (row-major). Images with a side
/// under 11 pixels (smaller than the window) are averaged without the border crop; an empty
/// image scores 1. NaN when a plane does not hold `width * height` values.
pub fn ssim(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
    let pixels = width.checked_mul(height);
    if pixels != Some(a.len()) || pixels != Some(b.len()) {
        return f64::NAN;
    }
    if width > 2 * RADIUS && height > 2 * RADIUS {
        ssim_cropped(a, b, width, height)
    } else {
        ssim_uncropped(a, b, width, height)
    }
}

/// The general path (any size, scipy borders, mean over the whole map): images with a side
/// under 11 pixels.
fn ssim_uncropped(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
    if a.is_empty() {
        return 1.0;
    }
    let kernel = gaussian_kernel();
    let filter = |plane: &[f64]| gaussian_filter(plane, width, height, &kernel);
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let ux = filter(a);
    let uy = filter(b);
    let uxx = filter(&product(a, a));
    let uyy = filter(&product(b, b));
    let uxy = filter(&product(a, b));
    let (c1, c2) = stabilisers();
    let mut sum = 0.0;
    for i in 0..a.len() {
        sum += ssim_at(ux[i], uy[i], uxx[i], uyy[i], uxy[i], c1, c2);
    }
    sum / a.len() as f64
}

avx2_dispatch!(ssim_cropped = ssim_cropped_generic(a: &[f64], b: &[f64], width: usize, height: usize) -> f64);

/// The fast path for images of at least 11 x 11: the mean of the SSIM map over the pixels at
/// least RADIUS from every border, whose windows lie inside the image (no border handling).
#[inline(always)]
fn ssim_cropped_generic(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
    let kernel = gaussian_kernel();
    let (c1, c2) = stabilisers();
    let inner = width - 2 * RADIUS;
    // Per output row: the five planes x, y, x², y², xy filtered vertically over the full
    // width, then horizontally over the cropped columns, then that row of the SSIM map.
    let mut vertical = vec![0.0; 5 * width];
    let mut filtered = vec![0.0; 5 * inner];
    let mut map = vec![0.0; inner];
    let mut sum = 0.0;
    for y in RADIUS..height - RADIUS {
        let window = (y - RADIUS) * width..(y + RADIUS + 1) * width;
        vertical_pass(
            &a[window.clone()],
            &b[window],
            width,
            &kernel,
            &mut vertical,
        );
        for (src, dst) in vertical
            .chunks_exact(width)
            .zip(filtered.chunks_exact_mut(inner))
        {
            horizontal_pass(src, &kernel, dst);
        }
        let [ux, uy, uxx, uyy, uxy] = rows::<5>(&filtered, inner);
        for (i, value) in map.iter_mut().enumerate() {
            *value = ssim_at(ux[i], uy[i], uxx[i], uyy[i], uxy[i], c1, c2);
        }
        for &value in &map {
            sum += value;
        }
    }
    sum / ((height - 2 * RADIUS) * inner) as f64
}

/// Filters the TAPS rows of `block_a` / `block_b` (each `width` wide) vertically into one row
/// of each of x, y, x², y², xy, packed in `out` (5 x `width`).
#[inline(always)]
fn vertical_pass(
    block_a: &[f64],
    block_b: &[f64],
    width: usize,
    kernel: &[f64; TAPS],
    out: &mut [f64],
) {
    let rows_a = rows::<TAPS>(block_a, width);
    let rows_b = rows::<TAPS>(block_b, width);
    let blocks = width / LANES;
    for c in 0..blocks {
        let mut acc = [[0.0; LANES]; 5];
        for (t, &weight) in kernel.iter().enumerate() {
            let pa = &rows_a[t].as_chunks::<LANES>().0[c];
            let pb = &rows_b[t].as_chunks::<LANES>().0[c];
            for l in 0..LANES {
                let (p, q) = (pa[l], pb[l]);
                acc[0][l] += weight * p;
                acc[1][l] += weight * q;
                acc[2][l] += weight * (p * p);
                acc[3][l] += weight * (q * q);
                acc[4][l] += weight * (p * q);
            }
        }
        for (k, values) in acc.iter().enumerate() {
            out[k * width + c * LANES..][..LANES].copy_from_slice(values);
        }
    }
    for i in blocks * LANES..width {
        let mut acc = [0.0; 5];
        for (t, &weight) in kernel.iter().enumerate() {
            let (p, q) = (rows_a[t][i], rows_b[t][i]);
            acc[0] += weight * p;
            acc[1] += weight * q;
            acc[2] += weight * (p * p);
            acc[3] += weight * (q * q);
            acc[4] += weight * (p * q);
        }
        for (k, value) in acc.into_iter().enumerate() {
            out[k * width + i] = value;
        }
    }
}

/// The `N` consecutive `len`-long rows of `values`.
#[inline(always)]
fn rows<const N: usize>(values: &[f64], len: usize) -> [&[f64]; N] {
    std::array::from_fn(|k| &values[k * len..(k + 1) * len])
}

/// Filters one row horizontally: `dst[i]` is the window of `src` centred on column
/// `i + RADIUS` (`src` is `dst.len() + 2 * RADIUS` long).
#[inline(always)]
fn horizontal_pass(src: &[f64], kernel: &[f64; TAPS], dst: &mut [f64]) {
    let blocks = dst.len() / LANES;
    for c in 0..blocks {
        let mut acc = [0.0; LANES];
        for (t, &weight) in kernel.iter().enumerate() {
            let window = &src[c * LANES + t..][..LANES];
            for l in 0..LANES {
                acc[l] += weight * window[l];
            }
        }
        dst[c * LANES..][..LANES].copy_from_slice(&acc);
    }
    for i in blocks * LANES..dst.len() {
        let mut acc = 0.0;
        for (t, &weight) in kernel.iter().enumerate() {
            acc += weight * src[i + t];
        }
        dst[i] = acc;
    }
}

/// PSNR in dB over all channels with a 255 peak; infinite for identical (or empty) images,
/// NaN when the two buffers differ in length.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    if a.is_empty() {
        return f64::INFINITY;
    }
    // The squared differences are integers and their sum stays far below 2^53, so the integer
    // sum is exactly what summing them as f64 gives.
    let mse = squared_error_sum(a, b) as f64 / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()
    }
}

avx2_dispatch!(squared_error_sum = squared_error_sum_generic(a: &[u8], b: &[u8]) -> u64);

#[inline(always)]
fn squared_error_sum_generic(a: &[u8], b: &[u8]) -> u64 {
    // 2^16 squared byte differences (at most 255² each) fit a u32. Plain loops rather than
    // `sum()`: an iterator's out-of-line `fold` would not be compiled for AVX2.
    const CHUNK: usize = 1 << 16;
    let mut total = 0u64;
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        let mut part = 0u32;
        for (&x, &y) in ca.iter().zip(cb) {
            let d = u32::from(x.abs_diff(y));
            part += d * d;
        }
        total += u64::from(part);
    }
    total
}

/// True when the largest channel difference of two RGB pixels exceeds the threshold.
#[inline(always)]
fn pixel_changed(p: &[u8; 3], q: &[u8; 3], threshold: u8) -> bool {
    p[0].abs_diff(q[0])
        .max(p[1].abs_diff(q[1]))
        .max(p[2].abs_diff(q[2]))
        > threshold
}

avx2_dispatch!(changed_count = changed_count_generic(a: &[[u8; 3]], b: &[[u8; 3]], threshold: u8) -> usize);

/// Changed pixels among the pairs of `a` and `b`.
#[inline(always)]
fn changed_count_generic(a: &[[u8; 3]], b: &[[u8; 3]], threshold: u8) -> usize {
    let mut count = 0;
    for (p, q) in a.iter().zip(b) {
        count += usize::from(pixel_changed(p, q, threshold));
    }
    count
}

/// Fraction of RGB pixels whose largest channel difference exceeds `threshold` (pixels of `a`;
/// a trailing partial pixel is ignored).
pub fn changed_area(a: &[u8], b: &[u8], threshold: u8) -> f64 {
    let (pa, pb) = (a.as_chunks::<3>().0, b.as_chunks::<3>().0);
    if pa.is_empty() {
        return 0.0;
    }
    changed_count(pa, pb, threshold) as f64 / pa.len() as f64
}

/// The smallest axis-aligned box holding every changed pixel (see [`changed_area`]), in
/// pixels: columns `x0..x1` and rows `y0..y1` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedBox {
    /// First changed column.
    pub x0: u32,
    /// First changed row.
    pub y0: u32,
    /// One past the last changed column.
    pub x1: u32,
    /// One past the last changed row.
    pub y1: u32,
}

impl ChangedBox {
    /// Grows `found` (rows visited top to bottom) by the changed columns `first..=last` of row
    /// `y`.
    pub fn include_row(found: &mut Option<ChangedBox>, y: usize, first: usize, last: usize) {
        let (x0, x1, y) = (first as u32, last as u32 + 1, y as u32);
        let b = found.get_or_insert(ChangedBox {
            x0,
            y0: y,
            x1,
            y1: y + 1,
        });
        b.x0 = b.x0.min(x0);
        b.x1 = b.x1.max(x1);
        b.y1 = y + 1;
    }

    /// `[x0, y0, x1, y1]`, the order of the `changed_box` column.
    pub fn to_vec(self) -> Vec<i32> {
        [self.x0, self.y0, self.x1, self.y1]
            .iter()
            .map(|&v| v as i32)
            .collect()
    }
}

/// The box around the pixels that [`changed_area`] counts; `None` when none changed.
pub fn changed_box(a: &[u8], b: &[u8], width: usize, threshold: u8) -> Option<ChangedBox> {
    if width == 0 {
        return None;
    }
    let (pa, pb) = (a.as_chunks::<3>().0, b.as_chunks::<3>().0);
    let mut found: Option<ChangedBox> = None;
    for (y, (ra, rb)) in pa.chunks(width).zip(pb.chunks(width)).enumerate() {
        // A vectorised count skips the rows without a change; the rest are searched from both
        // ends.
        if changed_count(ra, rb, threshold) == 0 {
            continue;
        }
        let is_changed = |(p, q): (&[u8; 3], &[u8; 3])| pixel_changed(p, q, threshold);
        let first = ra.iter().zip(rb).position(is_changed).unwrap_or(0);
        let last = ra.iter().zip(rb).rposition(is_changed).unwrap_or(first);
        ChangedBox::include_row(&mut found, y, first, last);
    }
    found
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
        let m = pair_metrics(
            &img,
            &img,
            32,
            24,
            &[1.0, 2.0],
            &[1.0, 2.0],
            ChangeRule::default(),
        );
        assert!((m.ssim - 1.0).abs() < 1e-9);
        assert!(m.psnr.is_infinite());
        assert_eq!(m.changed_area, 0.0);
        assert!((m.latent_cosine - 1.0).abs() < 1e-6);
    }

    #[test]
    fn different_images_score_lower() {
        let a = pattern(32, 32, 0);
        let b = pattern(32, 32, 5);
        let m = pair_metrics(
            &a,
            &b,
            32,
            32,
            &[1.0, 0.0],
            &[0.0, 1.0],
            ChangeRule::default(),
        );
        assert!(m.ssim < 0.9);
        assert!(m.psnr.is_finite());
        assert!(m.changed_area > 0.0 && m.changed_area <= 1.0);
        assert!(m.latent_cosine.abs() < 1e-6);
    }

    #[test]
    fn changed_box_bounds_the_changed_pixels() {
        let (w, h) = (10usize, 6usize);
        let a = vec![100u8; w * h * 3];
        assert_eq!(changed_box(&a, &a, w, CHANGED_PIXEL_THRESHOLD), None);
        let mut b = a.clone();
        // (x=2, y=1) red +30 and (x=7, y=4) blue -26 change; (x=9, y=5) +25 does not.
        b[(w + 2) * 3] = 130;
        b[(4 * w + 7) * 3 + 2] = 74;
        b[(5 * w + 9) * 3 + 1] = 125;
        let got = changed_box(&a, &b, w, CHANGED_PIXEL_THRESHOLD).unwrap();
        assert_eq!(
            got,
            ChangedBox {
                x0: 2,
                y0: 1,
                x1: 8,
                y1: 5
            }
        );
        assert_eq!(got.to_vec(), vec![2, 1, 8, 5]);
        assert!((changed_area(&a, &b, CHANGED_PIXEL_THRESHOLD) - 2.0 / 60.0).abs() < 1e-12);
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
        assert_eq!(RADIUS, 5);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// A deterministic pseudo-random byte stream (splitmix64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    /// The plain formula: filter the whole planes with reflected borders, then average the
    /// cropped map row-major.
    fn reference_ssim(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
        let kernel = gaussian_kernel();
        let filter = |plane: &[f64]| gaussian_filter(plane, width, height, &kernel);
        let product =
            |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
        let (ux, uy) = (filter(a), filter(b));
        let (uxx, uyy, uxy) = (
            filter(&product(a, a)),
            filter(&product(b, b)),
            filter(&product(a, b)),
        );
        let (c1, c2) = stabilisers();
        let mut sum = 0.0;
        let mut count = 0usize;
        for y in RADIUS..height - RADIUS {
            for x in RADIUS..width - RADIUS {
                let i = y * width + x;
                sum += ssim_at(ux[i], uy[i], uxx[i], uyy[i], uxy[i], c1, c2);
                count += 1;
            }
        }
        sum / count as f64
    }

    #[test]
    fn fast_ssim_is_bit_identical_to_the_plain_formula() {
        for (width, height) in [(11, 11), (12, 30), (37, 19), (64, 64), (100, 37)] {
            let a = noise(width * height * 3, width as u64);
            let mut b = a.clone();
            for (i, v) in b.iter_mut().enumerate() {
                if (i / 3) % width < width / 2 {
                    *v = v.wrapping_add((i % 61) as u8);
                }
            }
            let (la, lb) = (luminance(&a), luminance(&b));
            let fast = ssim(&la, &lb, width, height);
            let plain = reference_ssim(&la, &lb, width, height);
            assert_eq!(fast.to_bits(), plain.to_bits(), "{width}x{height}");
            assert_eq!(
                ssim_cropped_generic(&la, &lb, width, height).to_bits(),
                plain.to_bits()
            );
        }
    }

    #[test]
    fn small_images_average_the_whole_map() {
        let a = luminance(&noise(7 * 9 * 3, 1));
        let b = luminance(&noise(7 * 9 * 3, 2));
        let value = ssim(&a, &b, 7, 9);
        assert!(value.is_finite() && value < 1.0);
        assert!((ssim(&a, &a, 7, 9) - 1.0).abs() < 1e-12);
        assert_eq!(ssim(&[], &[], 0, 0), 1.0);
    }

    #[test]
    fn bad_sizes_give_nan_not_a_panic() {
        assert!(ssim(&[1.0; 10], &[1.0; 12], 3, 4).is_nan());
        assert!(ssim(&[1.0; 12], &[1.0; 12], usize::MAX, 2).is_nan());
        assert!(psnr(&[1, 2, 3], &[1, 2]).is_nan());
        assert_eq!(changed_area(&[1, 2], &[1, 2], CHANGED_PIXEL_THRESHOLD), 0.0);
        assert_eq!(
            changed_box(&[0, 0, 0], &[99, 0, 0, 5], 4, CHANGED_PIXEL_THRESHOLD),
            Some(ChangedBox {
                x0: 0,
                y0: 0,
                x1: 1,
                y1: 1
            })
        );
    }

    #[test]
    fn psnr_area_and_box_match_the_plain_formulas() {
        let (width, height) = (53usize, 41usize);
        let a = noise(width * height * 3, 7);
        let mut b = a.clone();
        for (i, v) in b.iter_mut().enumerate() {
            let (x, y) = ((i / 3) % width, (i / 3) / width);
            if (9..30).contains(&x) && (4..17).contains(&y) && i % 5 == 0 {
                *v = v.wrapping_add(40);
            }
        }
        let mse = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        assert_eq!(psnr(&a, &b), 10.0 * (255.0 * 255.0 / mse).log10());
        let changed: Vec<usize> = (0..width * height)
            .filter(|&p| (0..3).any(|c| a[p * 3 + c].abs_diff(b[p * 3 + c]) > 25))
            .collect();
        assert_eq!(
            changed_area(&a, &b, CHANGED_PIXEL_THRESHOLD),
            changed.len() as f64 / (width * height) as f64
        );
        let xs = changed.iter().map(|p| (p % width) as u32);
        let ys = changed.iter().map(|p| (p / width) as u32);
        let expected = ChangedBox {
            x0: xs.clone().min().unwrap(),
            y0: ys.clone().min().unwrap(),
            x1: xs.max().unwrap() + 1,
            y1: ys.max().unwrap() + 1,
        };
        assert_eq!(
            changed_box(&a, &b, width, CHANGED_PIXEL_THRESHOLD),
            Some(expected)
        );
        assert_eq!(
            expected,
            ChangedBox {
                x0: 9,
                y0: 4,
                x1: 30,
                y1: 17
            }
        );
    }
}
