//! The shapes judge: reads the objects of a small image of flat coloured shapes and decides
//! whether it shows its caption, and how well a pair of such images follows a one-word edit.
//!
//! - [`scene`]: the demonstrator's seeded scenes and captions (a port of
//!   `scripts/demonstrator/scenes.py`, pixel for pixel).
//! - [`caption`]: captions of the shapes grammar parsed into the scene they promise, and the
//!   edit between a pair's captions.
//! - [`read`]: background, objects, colours, shapes and positions read from an RGB8 image.
//! - [`verdict`]: an image against its caption.
//! - [`pair`]: a pair of images against their edit.
//! - [`colour`]: sRGB to CIELAB, CIE76 and HSV hue.
//! - [`judge`]: the [`crate::judge::Judge`] acs runs, and the JSON of `acs detect` and
//!   `acs metrics --prompts`.

pub mod caption;
pub mod colour;
pub mod judge;
pub mod pair;
pub mod read;
pub mod scene;
pub mod verdict;

#[cfg(test)]
pub(crate) mod test_support {
    //! Image degradations the tests read through.
    use crate::runtime::rng::SplitMix64;

    /// An image degradation: (RGB8 image, seed) to a degraded copy.
    pub type Degrade<'a> = &'a dyn Fn(&[u8], u64) -> Vec<u8>;

    /// A 3 x 3 box blur (rounded mean over the in-image neighbours) of an RGB8 image.
    pub fn blur3(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
        let mut out = vec![0u8; rgb.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let (mut sum, mut n) = (0u32, 0u32);
                    for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                        for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                            sum += u32::from(rgb[3 * (ny * w + nx) + c]);
                            n += 1;
                        }
                    }
                    out[3 * (y * w + x) + c] = ((sum + n / 2) / n) as u8;
                }
            }
        }
        out
    }

    /// Uniform noise in -8..=8 on every channel, from SplitMix64(seed).
    pub fn noise(rgb: &[u8], seed: u64) -> Vec<u8> {
        let mut rng = SplitMix64::new(seed);
        rgb.iter()
            .map(|&v| (i64::from(v) + (rng.next_u64() % 17) as i64 - 8).clamp(0, 255) as u8)
            .collect()
    }
}
