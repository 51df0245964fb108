//! Encodings of rendered outputs: PNG for images, float16 little-endian for latents.

use std::io::Cursor;

use image::codecs::png::PngDecoder;
use image::{ColorType, DynamicImage, ImageDecoder, ImageEncoder};

use crate::error::AcsError;

/// Encodes an RGB8 row-major buffer as PNG (deterministic bytes for identical pixels).
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, AcsError> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| AcsError::internal(format!("PNG encoding: {e}")))?;
    Ok(out)
}

/// Decodes PNG bytes to RGB8; returns (pixels, width, height).
///
/// 8-bit RGB PNGs (what acs writes) are decoded straight into the returned buffer, about twice
/// as fast as going through `DynamicImage`; other colour types are converted to RGB8. Images
/// whose pixels would need more than the `image` crate's default allocation limit (512 MiB)
/// are refused.
pub fn decode_png(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32), String> {
    let undecodable = |e: image::ImageError| format!("not a decodable PNG: {e}");
    let limits = image::Limits::default();
    let decoder =
        PngDecoder::with_limits(Cursor::new(bytes), limits.clone()).map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if decoder.color_type() != ColorType::Rgb8 {
        let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
        return Ok((image.into_rgb8().into_raw(), width, height));
    }
    let size = decoder.total_bytes();
    if limits.max_alloc.is_some_and(|max| size > max) {
        return Err(format!(
            "not a decodable PNG: {width}x{height} pixels exceed the decoding memory limit"
        ));
    }
    let mut rgb = vec![0; size as usize];
    decoder.read_image(&mut rgb).map_err(undecodable)?;
    Ok((rgb, width, height))
}

/// Decodes PNG bytes to RGB8 the way transformers' image processors see a file (Pillow's
/// `Image.open` then transformers' `convert_to_rgb`): transparency is composited onto white
/// with Pillow's integer arithmetic, 16-bit samples keep their high byte, and 16-bit grey is
/// clipped at 255 as Pillow's `I;16` conversion does. The CLIP judges read files through this
/// so that `acs detect` matches `CLIPImageProcessor` on any PNG, not only on RGB8 ones.
pub fn decode_png_onto_white(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32), String> {
    let undecodable = |e: image::ImageError| format!("not a decodable PNG: {e}");
    let decoder = PngDecoder::with_limits(Cursor::new(bytes), image::Limits::default())
        .map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    let high = |v: u16| (v >> 8) as u8;
    let rgb = match image {
        DynamicImage::ImageRgb8(rgb) => rgb.into_raw(),
        DynamicImage::ImageLuma8(grey) => grey.into_raw().iter().flat_map(|&v| [v; 3]).collect(),
        DynamicImage::ImageLuma16(grey) => grey
            .into_raw()
            .iter()
            .flat_map(|&v| [v.min(255) as u8; 3])
            .collect(),
        DynamicImage::ImageRgb16(rgb) => rgb.into_raw().into_iter().map(high).collect(),
        DynamicImage::ImageRgba8(rgba) => composite_onto_white(rgba.as_raw(), 4, |c| c),
        DynamicImage::ImageLumaA8(la) => composite_onto_white(la.as_raw(), 2, |c| c),
        DynamicImage::ImageRgba16(rgba) => composite_onto_white(rgba.as_raw(), 4, high),
        DynamicImage::ImageLumaA16(la) => composite_onto_white(la.as_raw(), 2, high),
        other => other.into_rgb8().into_raw(),
    };
    Ok((rgb, width, height))
}

/// Pillow's `alpha_composite` of `samples` (grey+alpha or RGBA, `channels` per pixel) over
/// opaque white, then RGB. With an opaque destination Pillow's blend reduces to
/// `(c*a + 255*(255-a))` scaled by 128 and divided by 255 with its shift-based rounding.
fn composite_onto_white<T: Copy>(samples: &[T], channels: usize, to8: impl Fn(T) -> u8) -> Vec<u8> {
    const PRECISION_BITS: u32 = 7;
    let blend = |c: u8, a: u8| -> u8 {
        if a == 0 {
            return 255;
        }
        let (c, a) = (u32::from(c), u32::from(a));
        let tmp = (c * a + 255 * (255 - a)) << PRECISION_BITS;
        let rounded = tmp + (0x80 << PRECISION_BITS);
        ((((rounded >> 8) + rounded) >> 8) >> PRECISION_BITS) as u8
    };
    samples
        .chunks_exact(channels)
        .flat_map(|pixel| {
            let alpha = to8(pixel[channels - 1]);
            let colour = |i: usize| blend(to8(pixel[i.min(channels - 2)]), alpha);
            [colour(0), colour(1), colour(2)]
        })
        .collect()
}

/// float32 values -> float16 little-endian bytes.
pub fn f16_le_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// float16 little-endian bytes -> float32 values; None if the length is odd.
pub fn f32_from_f16_le(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    )
}

/// A little-endian float32 NumPy `.npy` (format 1.0) file of `shape`.
pub fn npy_f32(values: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_png(&rgb, 4, 3).unwrap();
        assert_eq!(decode_png(&png).unwrap(), (rgb.clone(), 4, 3));
        assert_eq!(png, encode_png(&rgb, 4, 3).unwrap());
        assert!(decode_png(&png[..png.len() / 2]).is_err());
        assert!(decode_png(b"not a png").is_err());
        assert!(decode_png(&[]).is_err());
    }

    fn encoded(samples: &[u8], width: u32, colour: image::ExtendedColorType) -> Vec<u8> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(samples, width, 1, colour)
            .unwrap();
        png
    }

    #[test]
    fn transparency_is_composited_onto_white_like_pillow() {
        // Values from Pillow 13's alpha_composite over opaque white.
        let rgba = encoded(
            &[
                10, 20, 30, 255, 40, 50, 60, 128, 200, 100, 0, 0, 0, 255, 7, 1,
            ],
            4,
            image::ExtendedColorType::Rgba8,
        );
        assert_eq!(
            decode_png_onto_white(&rgba).unwrap().0,
            vec![10, 20, 30, 147, 152, 157, 255, 255, 255, 254, 255, 254]
        );
        let grey_alpha = encoded(&[100, 128, 0, 0], 2, image::ExtendedColorType::La8);
        assert_eq!(
            decode_png_onto_white(&grey_alpha).unwrap().0,
            vec![177, 177, 177, 255, 255, 255]
        );
        let rgb = encoded(&[1, 2, 3], 1, image::ExtendedColorType::Rgb8);
        assert_eq!(decode_png_onto_white(&rgb).unwrap().0, vec![1, 2, 3]);
    }

    #[test]
    fn other_colour_types_are_converted_to_rgb8() {
        let mut rgba = Vec::new();
        image::codecs::png::PngEncoder::new(&mut rgba)
            .write_image(
                &[10, 20, 30, 255, 40, 50, 60, 128],
                2,
                1,
                image::ExtendedColorType::Rgba8,
            )
            .unwrap();
        assert_eq!(
            decode_png(&rgba).unwrap(),
            (vec![10, 20, 30, 40, 50, 60], 2, 1)
        );
        let mut gray = Vec::new();
        image::codecs::png::PngEncoder::new(&mut gray)
            .write_image(&[0, 200], 1, 2, image::ExtendedColorType::L8)
            .unwrap();
        assert_eq!(
            decode_png(&gray).unwrap(),
            (vec![0, 0, 0, 200, 200, 200], 1, 2)
        );
    }

    #[test]
    fn npy_header_is_aligned() {
        let npy = npy_f32(&[1.0, 2.0], &[2]);
        assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert!(std::str::from_utf8(&npy[10..10 + header_len])
            .unwrap()
            .contains("'shape': (2,)"));
        assert_eq!(npy.len(), 10 + header_len + 8);
    }

    #[test]
    fn f16_round_trip() {
        let values = [0.0f32, 1.5, -2.25, 65504.0];
        assert_eq!(f32_from_f16_le(&f16_le_bytes(&values)).unwrap(), values);
        assert!(f32_from_f16_le(&[0, 1, 2]).is_none());
    }
}
