//! CLIP's image preprocessing, as transformers' `CLIPImageProcessor` does it with Pillow
//! (`CLIPImageProcessorPil` in transformers 5; what OpenAI's `clip` package and Q16 do too):
//! resize the shortest side with Pillow's bicubic filter, centre-crop, rescale by 1/255,
//! normalise by the channel mean and std, from a `preprocessor_config.json`.
//!
//! The resize reproduces Pillow's 8-bit resampling (`libImaging/Resample.c`) bit for bit: a
//! horizontal then a vertical pass, coefficients computed in double precision, normalised to
//! sum 1 and turned into 22-bit fixed point, sums rounded and clipped to 0..=255 per pass.

use std::path::Path;

use serde_json::Value;

use crate::runtime::error::RuntimeError;

// The channel statistics are written as transformers writes them; as float32 they round to
// the values numpy's `np.array(mean, dtype=np.float32)` holds.
/// OpenAI CLIP's channel means (transformers' `OPENAI_CLIP_MEAN`).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's channel standard deviations (`OPENAI_CLIP_STD`).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The preprocessing of a CLIP image tower.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// Resize so that the shortest side has this many pixels (`None`: no resize).
    pub shortest_edge: Option<usize>,
    /// Centre-crop to (height, width) (`None`: no crop).
    pub crop: Option<(usize, usize)>,
    /// Multiply by this (`None`: no rescale).
    pub rescale_factor: Option<f64>,
    /// Subtract the mean and divide by the std per channel (`None`: no normalisation).
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl Default for ClipImageProcessor {
    /// CLIP's defaults: shortest side 224, crop 224 x 224, 1/255, OpenAI's mean and std.
    fn default() -> Self {
        Self {
            shortest_edge: Some(224),
            crop: Some((224, 224)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
        }
    }
}

/// A size setting: the shortest edge it sets, the (height, width) crop it sets.
type SizeSetting = (Option<usize>, Option<(usize, usize)>);

/// A size setting as transformers reads it: `224`, `{"shortest_edge": 224}` or
/// `{"height": 224, "width": 224}`.
fn size_value(value: &Value) -> Option<SizeSetting> {
    if let Some(n) = value.as_u64() {
        return Some((Some(n as usize), Some((n as usize, n as usize))));
    }
    let shortest = value.get("shortest_edge").and_then(Value::as_u64);
    let height = value.get("height").and_then(Value::as_u64);
    let width = value.get("width").and_then(Value::as_u64);
    match (shortest, height, width) {
        (Some(s), _, _) => Some((Some(s as usize), None)),
        (None, Some(h), Some(w)) => Some((None, Some((h as usize, w as usize)))),
        _ => None,
    }
}

impl ClipImageProcessor {
    /// Reads `preprocessor_config.json`; keys it leaves out take CLIP's defaults.
    pub fn from_file(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| RuntimeError::input(format!("{}: invalid JSON: {e}", path.display())))?;
        Self::from_json(&value)
            .map_err(|reason| RuntimeError::input(format!("{}: {reason}", path.display())))
    }

    /// The processor a `preprocessor_config.json` object describes.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let defaults = Self::default();
        let flag = |key: &str| value.get(key).and_then(Value::as_bool).unwrap_or(true);
        let resample = value.get("resample").and_then(Value::as_u64).unwrap_or(3);
        if resample != 3 {
            return Err(format!(
                "key `resample`: {resample} is not supported (3, Pillow's bicubic filter)"
            ));
        }
        let shortest_edge = match value.get("size") {
            None => defaults.shortest_edge,
            Some(size) => match size_value(size) {
                Some((Some(edge), _)) => Some(edge),
                _ => return Err(format!("key `size`: {size} is not a shortest-edge size")),
            },
        };
        let crop = match value.get("crop_size") {
            None => defaults.crop,
            Some(size) => match size_value(size) {
                Some((_, Some(crop))) => Some(crop),
                Some((Some(edge), None)) => Some((edge, edge)),
                _ => return Err(format!("key `crop_size`: {size} is not a crop size")),
            },
        };
        let channels = |key: &str, default: [f32; 3]| -> Result<[f32; 3], String> {
            match value.get(key) {
                None => Ok(default),
                Some(Value::Array(items)) if items.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (slot, item) in out.iter_mut().zip(items) {
                        *slot = item.as_f64().ok_or(format!("key `{key}`: not a number"))? as f32;
                    }
                    Ok(out)
                }
                Some(other) => Err(format!("key `{key}`: {other} is not 3 numbers")),
            }
        };
        let mean = channels("image_mean", CLIP_MEAN)?;
        let std = channels("image_std", CLIP_STD)?;
        let rescale = value
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0);
        Ok(Self {
            shortest_edge: shortest_edge.filter(|_| flag("do_resize")),
            crop: crop.filter(|_| flag("do_center_crop")),
            rescale_factor: Some(rescale).filter(|_| flag("do_rescale")),
            normalize: Some((mean, std)).filter(|_| flag("do_normalize")),
        })
    }

    /// The pixel values of an RGB8 image (row-major, `width` x `height`): 3 planes of
    /// (height x width) after resize and crop, as float32.
    pub fn pixel_values(&self, rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
        let (mut image, mut w, mut h) = (rgb.to_vec(), width, height);
        if let Some(edge) = self.shortest_edge {
            let (new_w, new_h) = shortest_edge_size(w, h, edge);
            if (new_w, new_h) != (w, h) {
                image = resize_bicubic(&image, w, h, new_w, new_h);
                (w, h) = (new_w, new_h);
            }
        }
        if let Some((crop_h, crop_w)) = self.crop {
            image = center_crop(&image, w, h, crop_w, crop_h);
            (w, h) = (crop_w, crop_h);
        }
        let mut planes = vec![0f32; 3 * w * h];
        for c in 0..3 {
            for i in 0..w * h {
                let mut value = image[i * 3 + c] as f64;
                value = match self.rescale_factor {
                    Some(factor) => value * factor,
                    None => value,
                };
                let mut value = value as f32;
                if let Some((mean, std)) = self.normalize {
                    value = (value - mean[c]) / std[c];
                }
                planes[c * w * h + i] = value;
            }
        }
        planes
    }

    /// (channels, height, width) of the pixel values of a `width` x `height` image.
    pub fn output_shape(&self, width: usize, height: usize) -> (usize, usize, usize) {
        let (mut w, mut h) = (width, height);
        if let Some(edge) = self.shortest_edge {
            (w, h) = shortest_edge_size(w, h, edge);
        }
        if let Some((crop_h, crop_w)) = self.crop {
            (w, h) = (crop_w, crop_h);
        }
        (3, h, w)
    }
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: (width, height)
/// with the shortest side `edge` and the other scaled (truncated), as (width, height).
fn shortest_edge_size(width: usize, height: usize, edge: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == edge || short == 0 {
        return (width, height);
    }
    let new_long = (edge as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

/// transformers' `center_crop` on an RGB8 image: the (crop_w x crop_h) window whose top-left
/// corner is ((w - crop_w) // 2, (h - crop_h) // 2) (floor division), zeros where it leaves
/// the image (transformers pads a smaller image with zeros the same way).
fn center_crop(rgb: &[u8], w: usize, h: usize, crop_w: usize, crop_h: usize) -> Vec<u8> {
    let top = (h as i64 - crop_h as i64).div_euclid(2);
    let left = (w as i64 - crop_w as i64).div_euclid(2);
    let mut out = vec![0u8; crop_w * crop_h * 3];
    for y in 0..crop_h {
        let sy = top + y as i64;
        if !(0..h as i64).contains(&sy) {
            continue;
        }
        for x in 0..crop_w {
            let sx = left + x as i64;
            if !(0..w as i64).contains(&sx) {
                continue;
            }
            let src = (sy as usize * w + sx as usize) * 3;
            let dst = (y * crop_w + x) * 3;
            out[dst..dst + 3].copy_from_slice(&rgb[src..src + 3]);
        }
    }
    out
}

/// Bits of fixed-point precision of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic filter (a = -0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resampling `in_size` pixels to
/// `out_size` over the whole input: per output pixel the first input pixel and the fixed-point
/// weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    // Pillow takes the box edges as floats: (in1 - in0) is a float subtraction.
    let scale = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let weights: Vec<f64> = (0..xmax)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: a fixed-point sum rounded down to 8 bits and clamped.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((out_w, out_h), Image.BICUBIC)` of an RGB8 image, bit for bit.
pub fn resize_bicubic(rgb: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let vertical = coefficients(h, out_h);
    // The horizontal pass only needs the input rows the vertical pass reads.
    let first_row = vertical.first().map_or(0, |(ymin, _)| *ymin);
    let last_row = vertical
        .last()
        .map_or(0, |(ymin, weights)| ymin + weights.len());
    let (mut source, mut width) = (rgb.to_vec(), w);
    let mut row_offset = 0;
    if out_w != w {
        let horizontal = coefficients(w, out_w);
        let rows = last_row - first_row;
        let mut temp = vec![0u8; out_w * rows * 3];
        for y in 0..rows {
            let src_row = &rgb[(y + first_row) * w * 3..(y + first_row + 1) * w * 3];
            for (xx, (xmin, weights)) in horizontal.iter().enumerate() {
                let mut sums = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, k) in weights.iter().enumerate() {
                    let pixel = &src_row[(x + xmin) * 3..(x + xmin) * 3 + 3];
                    for c in 0..3 {
                        sums[c] = sums[c].wrapping_add(pixel[c] as i32 * k);
                    }
                }
                for c in 0..3 {
                    temp[(y * out_w + xx) * 3 + c] = clip8(sums[c]);
                }
            }
        }
        source = temp;
        width = out_w;
        row_offset = first_row;
    }
    if out_h == h {
        return source;
    }
    let mut out = vec![0u8; width * out_h * 3];
    for (yy, (ymin, weights)) in vertical.iter().enumerate() {
        for x in 0..width {
            let mut sums = [1i32 << (PRECISION_BITS - 1); 3];
            for (y, k) in weights.iter().enumerate() {
                let row = y + ymin - row_offset;
                let pixel = &source[(row * width + x) * 3..(row * width + x) * 3 + 3];
                for c in 0..3 {
                    sums[c] = sums[c].wrapping_add(pixel[c] as i32 * k);
                }
            }
            for c in 0..3 {
                out[(yy * width + x) * 3 + c] = clip8(sums[c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_truncate_like_transformers() {
        assert_eq!(shortest_edge_size(64, 64, 224), (224, 224));
        assert_eq!(shortest_edge_size(640, 480, 224), (298, 224));
        assert_eq!(shortest_edge_size(480, 640, 224), (224, 298));
        assert_eq!(shortest_edge_size(224, 500, 224), (224, 500));
    }

    #[test]
    fn resizing_a_flat_image_keeps_its_value() {
        let flat = vec![77u8; 10 * 7 * 3];
        let out = resize_bicubic(&flat, 10, 7, 23, 31);
        assert_eq!(out.len(), 23 * 31 * 3);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn crops_are_centred_and_padded_with_zeros() {
        let rgb: Vec<u8> = (0..5 * 4).flat_map(|i| [i as u8; 3]).collect();
        // 5 x 4 -> 3 x 2: left (5-3)//2 = 1, top (4-2)//2 = 1.
        let out = center_crop(&rgb, 5, 4, 3, 2);
        let values: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(values, vec![6, 7, 8, 11, 12, 13]);
    }

    #[test]
    fn config_sizes_of_both_formats() {
        let old = serde_json::json!({"size": 224, "crop_size": 224, "resample": 3});
        let new = serde_json::json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}});
        assert_eq!(
            ClipImageProcessor::from_json(&old).unwrap(),
            ClipImageProcessor::default()
        );
        assert_eq!(
            ClipImageProcessor::from_json(&new).unwrap(),
            ClipImageProcessor::default()
        );
        let nearest = serde_json::json!({"resample": 0});
        assert!(ClipImageProcessor::from_json(&nearest)
            .unwrap_err()
            .contains("resample"));
    }
}
