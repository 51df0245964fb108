//! The change mask of a pair: where its two images differ. A pixel changed when its largest
//! channel difference exceeds the threshold; the mask then grows by `dilation` pixels in every
//! direction (a (2r + 1)-pixel square), so that a trainer's mask covers the edit's rim.
//! `changed_area` and `changed_box` are this mask's mean and bounding box.
//!
//! Stored as a 1-bit greyscale PNG (white = changed) and, for latent-space losses, at latent
//! resolution: a latent pixel is 1 when any pixel of its block changed.

use crate::error::AcsError;
use crate::judge::metrics::ChangedBox;

/// The default threshold: a pixel changed when a channel moved by more than 25 of 255.
pub const DEFAULT_THRESHOLD: u8 = 25;

/// When a pixel counts as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRule {
    /// Largest channel difference (of 255) that still counts as unchanged.
    pub threshold: u8,
    /// Pixels the mask grows by in every direction.
    pub dilation: u32,
}

impl Default for ChangeRule {
    /// The rule `changed_area` always used: a difference above 25, no dilation.
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            dilation: 0,
        }
    }
}

/// A binary mask of an image's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMask {
    width: usize,
    height: usize,
    /// One value (0 or 1) per pixel, row-major.
    bits: Vec<u8>,
}

impl ChangeMask {
    /// The mask of two RGB8 images of `width` x `height` under `rule`.
    pub fn of(a: &[u8], b: &[u8], width: usize, height: usize, rule: ChangeRule) -> Self {
        let bits: Vec<u8> = a
            .chunks_exact(3)
            .zip(b.chunks_exact(3))
            .take(width * height)
            .map(|(p, q)| {
                let diff = (0..3).map(|c| p[c].abs_diff(q[c])).max().unwrap_or(0);
                u8::from(diff > rule.threshold)
            })
            .collect();
        let mask = Self {
            width,
            height,
            bits,
        };
        mask.dilated(rule.dilation as usize)
    }

    /// An all-zero mask (a benign row: nothing changed).
    pub fn empty(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            bits: vec![0; width * height],
        }
    }

    /// The mask grown by `radius` pixels: a separable max filter over a (2r + 1) square, each
    /// pass a sliding count of set pixels.
    fn dilated(self, radius: usize) -> Self {
        if radius == 0 || self.bits.is_empty() {
            return self;
        }
        let (w, h) = (self.width, self.height);
        let pass = |bits: &[u8], len: usize, lines: usize, at: &dyn Fn(usize, usize) -> usize| {
            let mut out = vec![0u8; bits.len()];
            for line in 0..lines {
                // Set pixels in the window [i - r, i + r] of this line.
                let mut count: usize = (0..radius.min(len))
                    .map(|i| bits[at(line, i)] as usize)
                    .sum();
                for i in 0..len {
                    if i + radius < len {
                        count += bits[at(line, i + radius)] as usize;
                    }
                    if i > radius {
                        count -= bits[at(line, i - radius - 1)] as usize;
                    }
                    out[at(line, i)] = u8::from(count > 0);
                }
            }
            out
        };
        let rows = pass(&self.bits, w, h, &|y, x| y * w + x);
        let bits = pass(&rows, h, w, &|x, y| y * w + x);
        Self { bits, ..self }
    }

    /// A latent-resolution mask (`bits`, one 0 / 1 byte per latent pixel, `latent_height` x
    /// `latent_width`) upsampled to `width` x `height`, nearest: pixel (y, x) takes latent
    /// pixel (y · latent_height / height, x · latent_width / width), the block
    /// [`Self::at_latent_resolution`] maps it to.
    pub fn from_latent(
        bits: &[u8],
        (latent_height, latent_width): (usize, usize),
        width: usize,
        height: usize,
    ) -> Self {
        let bits = (0..height)
            .flat_map(|y| {
                (0..width).map(move |x| {
                    let at = (y * latent_height / height) * latent_width + x * latent_width / width;
                    u8::from(bits.get(at).is_some_and(|&b| b != 0))
                })
            })
            .collect();
        Self {
            width,
            height,
            bits,
        }
    }

    /// The fraction of set pixels.
    pub fn area(&self) -> f64 {
        if self.bits.is_empty() {
            return 0.0;
        }
        self.bits.iter().map(|&b| b as usize).sum::<usize>() as f64 / self.bits.len() as f64
    }

    /// The smallest box holding every set pixel; `None` when none is set.
    pub fn bounding_box(&self) -> Option<ChangedBox> {
        let mut found: Option<ChangedBox> = None;
        for (y, row) in self.bits.chunks(self.width.max(1)).enumerate() {
            let (Some(first), Some(last)) = (
                row.iter().position(|&b| b != 0),
                row.iter().rposition(|&b| b != 0),
            ) else {
                continue;
            };
            ChangedBox::include_row(&mut found, y, first, last);
        }
        found
    }

    /// The mask at `latent_height` x `latent_width`: a latent pixel is 1 when any pixel of its
    /// block (image rows `y * height / latent_height ..`, likewise columns) is set.
    pub fn at_latent_resolution(&self, latent_height: usize, latent_width: usize) -> Vec<u8> {
        let mut out = vec![0u8; latent_height * latent_width];
        if latent_height == 0 || latent_width == 0 {
            return out;
        }
        for (y, row) in self.bits.chunks(self.width.max(1)).enumerate() {
            let ly = y * latent_height / self.height;
            for (x, &bit) in row.iter().enumerate() {
                if bit != 0 {
                    out[ly * latent_width + x * latent_width / self.width] = 1;
                }
            }
        }
        out
    }

    /// The mask as a 1-bit greyscale PNG (white = changed); deterministic bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, AcsError> {
        let packed: Vec<u8> = self
            .bits
            .chunks(self.width.max(1))
            .flat_map(|row| {
                row.chunks(8).map(|byte| {
                    byte.iter()
                        .enumerate()
                        .fold(0u8, |acc, (i, &bit)| acc | (bit << (7 - i)))
                })
            })
            .collect();
        let fail = |e: png::EncodingError| AcsError::internal(format!("change mask PNG: {e}"));
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&packed).map_err(fail)?;
        writer.finish().map_err(fail)?;
        Ok(out)
    }

    /// Reads a mask PNG (any bit depth; non-zero = set). `Err` says why not.
    pub fn from_png(bytes: &[u8]) -> Result<Self, String> {
        let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map_err(|e| format!("not a decodable PNG: {e}"))?
            .into_luma8();
        let (width, height) = (image.width() as usize, image.height() as usize);
        let bits = image
            .into_raw()
            .into_iter()
            .map(|v| u8::from(v != 0))
            .collect();
        Ok(Self {
            width,
            height,
            bits,
        })
    }

    /// (width, height).
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(width: usize, height: usize, changed: &[(usize, usize, u8)]) -> (Vec<u8>, Vec<u8>) {
        let a = vec![100u8; width * height * 3];
        let mut b = a.clone();
        for &(x, y, delta) in changed {
            b[(y * width + x) * 3 + 1] += delta;
        }
        (a, b)
    }

    #[test]
    fn threshold_and_dilation() {
        let (a, b) = images(9, 7, &[(4, 3, 26), (0, 0, 25)]);
        let plain = ChangeMask::of(&a, &b, 9, 7, ChangeRule::default());
        assert_eq!(plain.area(), 1.0 / 63.0);
        assert_eq!(plain.bounding_box().unwrap().to_vec(), vec![4, 3, 5, 4]);
        let grown = ChangeMask::of(
            &a,
            &b,
            9,
            7,
            ChangeRule {
                threshold: 25,
                dilation: 2,
            },
        );
        assert_eq!(grown.area(), 25.0 / 63.0);
        assert_eq!(grown.bounding_box().unwrap().to_vec(), vec![2, 1, 7, 6]);
        let low = ChangeMask::of(
            &a,
            &b,
            9,
            7,
            ChangeRule {
                threshold: 24,
                dilation: 1,
            },
        );
        // (0, 0) now counts; its square is clipped at the border.
        assert_eq!(low.area(), (9.0 + 4.0) / 63.0);
        assert_eq!(
            ChangeMask::of(&a, &a, 9, 7, ChangeRule::default()).bounding_box(),
            None
        );
    }

    #[test]
    fn dilation_matches_a_brute_force_square() {
        let (w, h) = (13, 11);
        let changed: Vec<(usize, usize, u8)> = [(0, 0), (12, 10), (6, 5), (3, 9), (11, 2)]
            .iter()
            .map(|&(x, y)| (x, y, 90))
            .collect();
        let (a, b) = images(w, h, &changed);
        for r in 0..6usize {
            let rule = ChangeRule {
                threshold: 25,
                dilation: r as u32,
            };
            let mask = ChangeMask::of(&a, &b, w, h, rule);
            for y in 0..h {
                for x in 0..w {
                    let near = changed
                        .iter()
                        .any(|&(cx, cy, _)| cx.abs_diff(x) <= r && cy.abs_diff(y) <= r);
                    assert_eq!(mask.bits[y * w + x] == 1, near, "r {r} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn png_round_trip_and_latent_resolution() {
        let (a, b) = images(16, 8, &[(0, 0, 50), (9, 7, 50), (15, 3, 50)]);
        let mask = ChangeMask::of(&a, &b, 16, 8, ChangeRule::default());
        let png = mask.to_png().unwrap();
        assert_eq!(png, mask.to_png().unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!(
            (info.bit_depth, info.color_type),
            (png::BitDepth::One, png::ColorType::Grayscale)
        );
        assert_eq!(ChangeMask::from_png(&png).unwrap(), mask);
        assert_eq!(
            mask.at_latent_resolution(2, 4),
            vec![1, 0, 0, 1, 0, 0, 1, 0]
        );
        assert_eq!(
            ChangeMask::empty(16, 8).at_latent_resolution(1, 2),
            vec![0, 0]
        );
        assert!(ChangeMask::from_png(b"junk").is_err());
    }

    #[test]
    fn latent_masks_upsample_to_the_blocks_they_map_to() {
        let latent = [1, 0, 0, 1, 0, 0, 1, 0];
        let mask = ChangeMask::from_latent(&latent, (2, 4), 16, 8);
        assert_eq!(mask.size(), (16, 8));
        assert_eq!(mask.at_latent_resolution(2, 4), latent.to_vec());
        assert_eq!(mask.area(), 3.0 / 8.0);
        assert_eq!(mask.bits[..8], [1, 1, 1, 1, 0, 0, 0, 0]);
    }
}
