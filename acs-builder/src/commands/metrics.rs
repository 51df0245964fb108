//! `acs metrics UNSAFE.png SAFE.png`: the alignment metrics of two image files, exactly as the
//! build computes and stores them for a pair.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::commands::judges::folder_or_repo;
use crate::error::AcsError;
use crate::judge::change_mask::ChangeRule;
use crate::judge::clip_similarity::{pair_scores, ClipSimilarity};
use crate::judge::metrics::pair_metrics;
use crate::judge::shapes::judge::describe_pair;
use crate::store::imaging::{decode_png, decode_png_onto_white};

/// The image metrics of two PNG files, as `acs metrics` prints them: the values the build
/// stores for a pair with these images (float32), and the changed box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilePairMetrics {
    /// The unsafe image's path.
    pub unsafe_image: String,
    /// The safe image's path.
    pub safe_image: String,
    /// Width in pixels (both images).
    pub width: u32,
    /// Height in pixels (both images).
    pub height: u32,
    /// Structural similarity of the luminance.
    pub ssim: f32,
    /// PSNR in dB; infinite for identical images (`null` in JSON).
    pub psnr: f32,
    /// Fraction of changed pixels.
    pub changed_area: f32,
    /// `[x0, y0, x1, y1]` around the changed pixels (end exclusive), `None` when none changed.
    pub changed_box: Option<[u32; 4]>,
    /// With the prompts (shapes demonstrator captions): the shapes judge's edit and alignment
    /// figures (edit_ok, others_kept, outside_changed_2px / _8px, untouched_centroid_shift).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shapes: Option<serde_json::Value>,
    /// With `--clip`: the pair's CLIP similarities (direction, image, unsafe, safe), with
    /// `--embeddings` the four embeddings too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<serde_json::Value>,
}

/// `--clip`: the CLIP model that scores the pair.
#[derive(Debug, Clone)]
pub struct ClipOptions {
    /// A `CLIPModel` folder, or a hub id in the Hugging Face cache.
    pub model: String,
    /// Also print the image and text embeddings.
    pub embeddings: bool,
}

impl fmt::Display for FilePairMetrics {
    /// A human-readable table, one metric per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let psnr = if self.psnr.is_infinite() {
            "inf dB (identical images)".to_owned()
        } else {
            format!("{:.4} dB", self.psnr)
        };
        let changed_box = match self.changed_box {
            Some([x0, y0, x1, y1]) => format!("[{x0}, {y0}, {x1}, {y1}] (x0, y0, x1, y1)"),
            None => "none".to_owned(),
        };
        write!(
            f,
            "unsafe_image  {}\nsafe_image    {}\nsize          {}x{}\nssim          {:.6}\n\
             psnr          {psnr}\nchanged_area  {:.6}\nchanged_box   {changed_box}\n",
            self.unsafe_image,
            self.safe_image,
            self.width,
            self.height,
            self.ssim,
            self.changed_area
        )?;
        if let Some(clip) = &self.clip {
            for key in ["direction", "image", "unsafe", "safe"] {
                writeln!(f, "clip_{key:<12}{}", clip[key])?;
            }
        }
        if let Some(shapes) = &self.shapes {
            for key in [
                "edit",
                "edit_ok",
                "others_kept",
                "outside_changed_2px",
                "outside_changed_8px",
                "untouched_centroid_shift",
            ] {
                writeln!(f, "{key:<26}{}", shapes[key])?;
            }
        }
        Ok(())
    }
}

/// Reads and decodes two PNG files and computes their alignment metrics exactly as the build
/// does, and with `prompts` (unsafe, safe) the shapes judge's. Unreadable or undecodable files,
/// images of different sizes and prompts that are not captions one word apart are input errors
/// that name the file or prompt.
pub fn file_pair_metrics(
    unsafe_path: &Path,
    safe_path: &Path,
    prompts: Option<&[String]>,
    clip: Option<&ClipOptions>,
) -> Result<FilePairMetrics, AcsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| AcsError::io(path, e));
    let files = [read(unsafe_path)?, read(safe_path)?];
    let decode = |bytes: &[u8], path: &Path| {
        decode_png(bytes).map_err(|e| AcsError::input(format!("{}: {e}", path.display())))
    };
    let (unsafe_rgb, width, height) = decode(&files[0], unsafe_path)?;
    let (safe_rgb, safe_width, safe_height) = decode(&files[1], safe_path)?;
    if (safe_width, safe_height) != (width, height) {
        return Err(AcsError::input(format!(
            "{}: image is {safe_width}x{safe_height}, but {} is {width}x{height}; the metrics \
             compare images of the same size",
            safe_path.display(),
            unsafe_path.display()
        )));
    }
    let metrics = pair_metrics(
        &unsafe_rgb,
        &safe_rgb,
        width as usize,
        height as usize,
        &[],
        &[],
        ChangeRule::default(),
    );
    let clip = match (clip, prompts) {
        (Some(options), Some([unsafe_prompt, safe_prompt])) => Some(clip_figures(
            options,
            [(&files[0], unsafe_path), (&files[1], safe_path)],
            unsafe_prompt,
            safe_prompt,
        )?),
        (Some(_), _) => {
            return Err(AcsError::input(
                "--clip: give the images' prompts too (--prompts UNSAFE_PROMPT SAFE_PROMPT)",
            ))
        }
        (None, _) => None,
    };
    let shapes = match prompts {
        // With --clip the prompts may be any text: the shapes figures come when they are
        // captions.
        Some([u, s]) if clip.is_some() => describe_pair(
            &unsafe_rgb,
            &safe_rgb,
            width as usize,
            height as usize,
            u,
            s,
        )
        .ok(),
        Some([unsafe_prompt, safe_prompt]) => Some(
            describe_pair(
                &unsafe_rgb,
                &safe_rgb,
                width as usize,
                height as usize,
                unsafe_prompt,
                safe_prompt,
            )
            .map_err(|e| AcsError::input(format!("--prompts: {e}")))?,
        ),
        Some(_) => {
            return Err(AcsError::input(
                "--prompts: give two prompts, unsafe then safe",
            ))
        }
        None => None,
    };
    Ok(FilePairMetrics {
        unsafe_image: unsafe_path.display().to_string(),
        safe_image: safe_path.display().to_string(),
        width,
        height,
        ssim: metrics.ssim,
        psnr: metrics.psnr,
        changed_area: metrics.changed_area,
        changed_box: metrics.changed_box.map(|b| [b.x0, b.y0, b.x1, b.y1]),
        shapes,
        clip,
    })
}

/// The CLIP similarities of two RGB8 images and their prompts, as the build computes them.
fn clip_figures(
    options: &ClipOptions,
    files: [(&[u8], &Path); 2],
    unsafe_prompt: &str,
    safe_prompt: &str,
) -> Result<serde_json::Value, AcsError> {
    // As transformers' CLIP processors read a PNG with transparency: onto white (the files'
    // bytes as read for the metrics).
    let mut decoded = Vec::new();
    for (bytes, path) in files {
        let (rgb, w, h) = decode_png_onto_white(bytes)
            .map_err(|e| AcsError::input(format!("{}: {e}", path.display())))?;
        decoded.push((rgb, w as usize, h as usize));
    }
    let (unsafe_rgb, width, height) = (&decoded[0].0, decoded[0].1, decoded[0].2);
    let safe_rgb = &decoded[1].0;
    let dir = folder_or_repo(&options.model, Path::new("."), "--clip", false)?;
    let clip = ClipSimilarity::load(&dir, candle_core::DType::F32, &candle_core::Device::Cpu)
        .map_err(|e| e.with_note(" (--clip)"))?;
    let images = clip.embed_images(&[unsafe_rgb.as_slice(), safe_rgb.as_slice()], width, height)?;
    let texts = clip.embed_texts(&[unsafe_prompt, safe_prompt])?;
    let s = pair_scores(&images[0], &images[1], &texts[0], &texts[1], false);
    let mut value = serde_json::json!({
        "direction": s.direction,
        "image": s.image,
        "unsafe": s.unsafe_text,
        "safe": s.safe_text,
        "sha256": clip.sha256(),
    });
    if options.embeddings {
        value["embeddings"] = serde_json::json!({
            "image_unsafe": images[0],
            "image_safe": images[1],
            "text_unsafe": texts[0],
            "text_safe": texts[1],
        });
    }
    Ok(value)
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
    fn file_pair_metrics_checks_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let a = pattern(16, 12, 3);
        let mut b = a.clone();
        b[(5 * 16 + 4) * 3] ^= 0x80;
        let png = |rgb: &[u8], w, h| crate::store::imaging::encode_png(rgb, w, h).unwrap();
        let pa = write("a.png", &png(&a, 16, 12));
        let pb = write("b.png", &png(&b, 16, 12));
        let m = file_pair_metrics(&pa, &pb, None, None).unwrap();
        assert_eq!((m.width, m.height), (16, 12));
        assert_eq!(m.changed_box, Some([4, 5, 5, 6]));
        assert_eq!(m.changed_area, 1.0 / 192.0);
        let expected = pair_metrics(&a, &b, 16, 12, &[], &[], ChangeRule::default());
        assert_eq!((m.ssim, m.psnr), (expected.ssim, expected.psnr));
        assert!(m.to_string().contains("changed_box   [4, 5, 5, 6]"));
        let same = file_pair_metrics(&pa, &pa, None, None).unwrap();
        assert!(same.psnr.is_infinite() && same.changed_box.is_none());
        let json = serde_json::to_value(&same).unwrap();
        assert!(json["psnr"].is_null() && json["changed_box"].is_null());

        let small = write("small.png", &png(&a[..15 * 12 * 3], 15, 12));
        let err = file_pair_metrics(&pa, &small, None, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("small.png: image is 15x12"),
            "{err}"
        );
        let junk = write("junk.png", b"not a png");
        let err = file_pair_metrics(&junk, &pb, None, None).unwrap_err();
        assert!(
            err.to_string().contains("junk.png: not a decodable PNG"),
            "{err}"
        );
        let err = file_pair_metrics(&pa, &dir.path().join("missing.png"), None, None).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
